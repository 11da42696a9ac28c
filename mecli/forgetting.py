"""Forgetting for real: selection, the cascade, and scrubbing every copy on disk."""

from __future__ import annotations

import os

from mecli.db import Message, Store
from mecli.memory import search
from mecli.models import Models


def forget(store: Store, paths, message_ids: list[int]) -> dict:
    """Delete messages and everything derived from them, for real.

    The database cascade (FTS rows, vectors, feedback, rules left without
    sources) is one transaction; then the REPL's input history loses the lines
    the user typed for them, saved prompt caches go, and the file is scrubbed
    so the text is gone from disk, not just unlinked.
    """
    texts = [m.content for m in store.messages_by_ids(message_ids).values() if m.role == "user"]
    counts = store.forget_messages(message_ids)
    counts["history_lines"] = scrub_input_history(paths.input_history, texts)
    clear_caches(paths)
    store.scrub()
    return counts


def clear_caches(paths) -> None:
    """Saved model states hold evaluated prompts (so: remembered text)."""
    folder = paths.cache_dir / "prompts"
    if folder.exists():
        for f in folder.iterdir():
            f.unlink(missing_ok=True)


def scrub_input_history(path, texts: list[str]) -> int:
    """Drop REPL input-history entries that typed any of these messages."""
    if not texts or not path.exists():
        return 0
    entries: list[list[str]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if line.startswith("#") or not entries and line.strip() == "":
            entries.append([line])
        elif entries:
            entries[-1].append(line)
        else:
            entries.append([line])
    kept, dropped = [], 0
    for entry in entries:
        typed = "".join(l[1:] for l in entry if l.startswith("+")).rstrip("\n")
        if typed.strip() and any(typed.strip() in t or t.strip() in typed for t in texts):
            dropped += 1
        else:
            kept.append("".join(entry))
    if dropped:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return dropped


def parse_date(value: str, option: str) -> str:
    """An ISO 8601 date or time from the command line, as a stored-timestamp bound."""
    from datetime import datetime, timezone

    from mecli.environment import UsageError

    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date (use YYYY-MM-DD or ISO 8601)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def select_for_forget(store: Store, models: Models | None, query: str, *, ids: list[int],
                      conversation: int | None, before: str | None, since: str | None,
                      everything: bool, k: int) -> list[Message]:
    """The messages a `forget` call means. At least one selector is required."""
    from mecli.environment import UsageError

    if not (query.strip() or ids or conversation is not None or before or since or everything):
        raise UsageError("say what to forget: QUERY, --id, --conversation, --before, --since or --all")
    selected: set[int] = set()
    if everything:
        selected.update(store.message_ids(everything=True))
    for mid in ids:
        if store.message(mid) is None:
            raise UsageError(f"no message with id {mid}")
        selected.add(mid)
    # --conversation, --before, --since and QUERY narrow each other; --id adds.
    narrowed: set[int] | None = None
    if conversation is not None and not store.conversation_exists(conversation):
        raise UsageError(f"no conversation with id {conversation}")
    bounds = {}
    if before:
        bounds["before"] = parse_date(before, "--before")
    if since:
        bounds["since"] = parse_date(since, "--since")
    if conversation is not None or bounds:
        narrowed = set(store.message_ids(conversation_id=conversation, **bounds))
    if query.strip():
        hits = {h.message.id for h in search(store, models, query, k=k)}
        narrowed = hits if narrowed is None else narrowed & hits
    selected.update(narrowed or ())
    found = store.messages_by_ids(sorted(selected))
    return [found[i] for i in sorted(found)]
