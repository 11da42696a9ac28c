"""Forgetting for real: selection, the cascade, and scrubbing every copy on disk.

`select()` finds what a `forget` call means (messages, and for a QUERY also
the feedback and rules that say it); `forget()` deletes it with everything
derived from it: FTS rows and vectors, feedback from or about the messages,
rules left without sources (a rule that keeps other sources is phrased again
from them), the REPL's input-history lines, saved caches. Then the database
file is scrubbed so the text is gone from disk, not just unlinked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mecli import learning, memory
from mecli.db import Message, Store
from mecli.environment import MeError, UsageError
from mecli.models import Models

# A message matches a QUERY when it has all of the query's words, or when its
# meaning is this close (cosine distance of sentence embeddings; paraphrases
# of a short query are about 0.15-0.45 away with MiniLM, unrelated text 0.8+).
MAX_DISTANCE = 0.5


@dataclass
class Selection:
    messages: list[Message] = field(default_factory=list)
    feedback: list[dict] = field(default_factory=list)  # matched by the query itself
    rules: list[dict] = field(default_factory=list)  # matched by the query itself
    everything: bool = False
    query: str = ""
    truncated: bool = False  # the query matched more than k messages

    def empty(self) -> bool:
        return not (self.messages or self.feedback or self.rules)

    def as_dict(self) -> dict:
        return {"messages": [m.id for m in self.messages],
                "feedback": [f["id"] for f in self.feedback],
                "rules": [r["id"] for r in self.rules],
                "all": self.everything}


# --- selection ----------------------------------------------------------------------


def parse_date(value: str, option: str) -> str:
    """An ISO 8601 date or time from the command line, as a stored-timestamp bound.

    A date or time without a zone is the user's local time.
    """
    text = (value or "").strip()
    try:
        if not text:
            raise ValueError
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date (use YYYY-MM-DD or ISO 8601, "
                         "e.g. 2024-05-01 or 2024-05-01T14:30)") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def query_words(query: str) -> list[str]:
    """The words a query is matched by (as the full-text index tokenizes them)."""
    return memory.query_words(query, limit=64)


def _text_has_words(text: str, words: list[str]) -> bool:
    have = set(re.findall(r"\w+", text.lower()))
    return bool(words) and all(w in have for w in words)


def search_matches(store: Store, models: Models | None, query: str, k: int) -> tuple[list[int], bool]:
    """Message ids that match a query, best first: hybrid search (words and meaning,
    fused by reciprocal rank) restricted to real matches, so that forgetting
    never takes a merely nearest neighbour. (ids, more than k matched)."""
    words = query_words(query)
    depth = max(memory.CANDIDATES, k * 3)
    rankings: list[tuple[str, float, list[int]]] = []
    if words:
        match = memory.fts_match(words, "AND")
        rankings.append(("fts", memory.FTS_WEIGHT, [mid for mid, _ in store.fts_search(match, depth + 1)]))
    if models is not None and query.strip() and store.has_vectors():
        embedder = None
        try:
            embedder = models.embedder()
        except MeError:
            pass
        model_id = store.vec_model_id(embedder.key) if embedder is not None else None
        if model_id is not None:
            vector = embedder.embed([query])[0]
            close = [mid for mid, distance in store.vec_search(model_id, vector, depth + 1)
                     if distance <= MAX_DISTANCE]
            rankings.append(("vec", memory.VEC_WEIGHT, close))
    scores, _ = memory.fuse(rankings)
    ordered = sorted(scores, key=lambda mid: (-scores[mid], -mid))
    return ordered[:k], len(ordered) > k


def select(store: Store, models: Models | None, query: str = "", *, ids: list[int] = (),
           conversation: int | None = None, before: str | None = None, since: str | None = None,
           everything: bool = False, k: int = 20) -> Selection:
    """What a `forget` call means. At least one selector is required.

    --id adds messages; --conversation, --before, --since and QUERY narrow each
    other. A QUERY also selects the feedback and rules whose text has all its
    words. --all is everything: every message, feedback item and rule.
    """
    query = (query or "").strip()
    if not (query or ids or conversation is not None or before or since or everything):
        raise UsageError("say what to forget: QUERY, --id, --conversation, --before, --since or --all")
    bounds = {}
    if before:
        bounds["before"] = parse_date(before, "--before")
    if since:
        bounds["since"] = parse_date(since, "--since")
    if "before" in bounds and "since" in bounds and bounds["since"] >= bounds["before"]:
        raise UsageError(f"--since {since} is not before --before {before}: nothing is in between")
    for mid in ids:
        if store.message(mid) is None:
            raise UsageError(f"no message with id {mid}")
    if conversation is not None and not store.conversation_exists(conversation):
        raise UsageError(f"no conversation with id {conversation}")
    selection = Selection(everything=everything, query=query)
    if everything:
        found = store.messages_by_ids(store.message_ids(everything=True))
        selection.messages = [found[i] for i in sorted(found)]
        selection.feedback = store.all_feedback()
        selection.rules = store.rules()
        return selection

    selected: set[int] = set(ids)
    narrowed: set[int] | None = None
    if conversation is not None or bounds:
        narrowed = set(store.message_ids(conversation_id=conversation, **bounds))
    if query:
        hits, selection.truncated = search_matches(store, models, query, k)
        narrowed = set(hits) if narrowed is None else narrowed & set(hits)
        if conversation is None and not bounds:
            words = query_words(query)
            selection.feedback = [f for f in store.all_feedback() if _text_has_words(f["text"], words)]
            selection.rules = [r for r in store.rules() if _text_has_words(r["text"], words)]
    selected.update(narrowed or ())
    found = store.messages_by_ids(sorted(selected))
    selection.messages = [found[i] for i in sorted(found)]
    return selection


# --- the cascade ----------------------------------------------------------------------


def forget(store: Store, paths, message_ids: list[int] | Selection, *,
           models: Models | None = None) -> dict:
    """Delete messages (or a whole Selection) and everything derived from them, for real.

    The database cascade is one transaction; then the REPL's input history
    loses the lines that typed what was forgotten, saved caches go, and the
    database file is scrubbed so the text is gone from disk, not just unlinked.
    """
    if isinstance(message_ids, Selection):
        selection = message_ids
    else:
        selection = Selection(messages=list(store.messages_by_ids(list(message_ids)).values()))
    ids = sorted({m.id for m in selection.messages})
    id_set = set(ids)
    all_feedback = store.all_feedback()
    doomed_feedback = {f["id"]: f for f in all_feedback
                       if f["message_id"] in id_set or f["source_message_id"] in id_set}
    doomed_feedback.update({f["id"]: f for f in selection.feedback})
    touched_rules = [r for r in store.rules() if set(r["sources"]) & set(doomed_feedback)]
    typed = [m.content for m in selection.messages if m.role == "user"]
    typed += [f["text"] for f in doomed_feedback.values()]
    typed += [r["text"] for r in selection.rules if r["manual"]]

    counts = {"messages": 0, "feedback": 0, "rules": 0, "conversations": 0, "reindexed": 0}
    with store.transaction():
        for key, n in store.forget_messages(
                ids, index_text=lambda m, previous: memory.index_text(m.content, previous)).items():
            counts[key] = counts.get(key, 0) + n
        rest = [fid for fid in doomed_feedback if store.feedback(fid) is not None]
        for key, n in store.forget_feedback(rest).items():
            counts[key] += n
        rules = store.rules() if selection.everything else selection.rules
        for rule in rules:
            if store.rule(rule["id"]) is not None:
                store.delete_rule(rule["id"])
                counts["rules"] += 1
        rephrase_rules(store, [r["id"] for r in touched_rules],
                       [f["text"] for f in doomed_feedback.values()])
    if counts["reindexed"] and models is not None:
        try:  # the messages indexed again need their vectors back
            memory.embed_pending(store, models, limit=None)
        except MeError:
            pass  # the next turn embeds them
    if selection.everything:
        counts["history_lines"] = clear_input_history(paths.input_history)
    else:
        counts["history_lines"] = scrub_input_history(paths.input_history, typed, selection.query)
    counts["cache_files"] = clear_caches(paths)
    counts["scrubbed"] = scrub(store)
    return counts


def scrub(store: Store) -> bool:
    """store.scrub(), which another process holding the database can keep from
    finishing: the deletion stands, the file is rewritten next time."""
    import sqlean

    try:
        return store.scrub()
    except sqlean.Error:
        return False


def forget_feedback(store: Store, paths, feedback_ids: list[int]) -> dict:
    """Delete feedback items (and the rules left without sources), for real."""
    feedback = [f for f in (store.feedback(fid) for fid in feedback_ids) if f is not None]
    return forget(store, paths, Selection(feedback=feedback))


def forget_rule(store: Store, paths, rule_id: int) -> dict:
    """`me profile rm ID --forget-sources`: the rule and the feedback behind it, for
    real (input-history lines and cached prompts that held them included)."""
    rule = store.rule(rule_id)
    if rule is None:
        raise UsageError(f"no rule with id {rule_id}")
    return forget(store, paths, Selection(feedback=store.feedback_for_rule(rule_id), rules=[rule]))


def rephrase_rules(store: Store, rule_ids: list[int], forgotten_texts: list[str]) -> int:
    """A learned rule is worded after one of its feedback items; when that one is
    forgotten, the rule (kept by its other sources) is worded again after one that
    is left, so no forgotten words live on in the profile. Rules worded by hand
    (added or edited) keep their words."""
    forgotten = {p.rule for text in forgotten_texts for p in learning.phrase_all(text)}
    forgotten_words = {w for text in forgotten_texts for w in _words(text)}
    changed = 0
    for rid in rule_ids:
        rule = store.rule(rid)
        if rule is None or rule["manual"]:
            continue
        items = store.feedback_for_rule(rid)
        if not items:
            continue
        left_words = {w for f in items for w in _words(f["text"])}
        leaked = (_words(rule["text"]) | _words(rule["subject"] or "")) & forgotten_words - left_words
        if rule["text"] not in forgotten and not leaked:
            continue
        text, subject = None, rule["subject"]
        for f in reversed(items):  # the latest wording that is left
            said = learning.phrase_all(f["text"], explicit=f["source"] == "explicit")
            same = [p for p in said if p.subject == rule["subject"]] or said
            if same:
                text, subject = same[0].rule, same[0].subject  # free-form keys hold words too
                break
        text = text or learning.as_sentence(items[-1]["text"])
        if (text, subject) != (rule["text"], rule["subject"]):
            store.update_rule(rid, text=text, subject=subject)
            changed += 1
    return changed


def _words(text: str) -> set[str]:
    """The words that could say something about the user (not 'the', 'answers')."""
    return {w for w in re.findall(r"\w+", text.lower())
            if len(w) >= 4 and w not in memory.STOPWORDS and w not in COMMON_RULE_WORDS}


COMMON_RULE_WORDS = frozenset("answer answers always never user code keep use using with".split())


# --- copies outside the database ---------------------------------------------------------


def _overwrite_in_place(path: Path) -> None:
    """Zero a file's bytes (best effort: the file system may still keep old
    blocks, but no file under ME_HOME does)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b", buffering=0) as f:
            f.write(b"\0" * size)
            os.fsync(f.fileno())
    except OSError:
        pass


def clear_caches(paths) -> int:
    """Saved model states and prompt caches hold evaluated prompts (so:
    remembered text). Caches can always be rebuilt: all of them go."""
    folder = Path(paths.cache_dir)
    if not folder.exists():
        return 0
    n = 0
    for f in sorted(folder.rglob("*"), reverse=True):
        if f.is_symlink() or not f.is_file():
            continue
        _overwrite_in_place(f)
        f.unlink(missing_ok=True)
        n += 1
    return n


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _typed_matches(typed: str, pattern: str) -> bool:
    t, p = _norm(typed), _norm(pattern)
    if not t or not p:
        return False
    if t == p or (len(p) >= 8 and p in t):
        return True
    # "/feedback TEXT", "/forget QUERY": a command with the text as its argument.
    if t.startswith("/") and " " in t and t.split(" ", 1)[1] == p:
        return True
    return len(t) >= 16 and t in p


def _history_entries(text: str) -> list[list[str]]:
    """prompt_toolkit FileHistory: entries of "\\n# time\\n+line\\n+line\\n"."""
    entries: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#") or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    return entries


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    # Zero the old file's bytes in place first: replacing only unlinks them.
    _overwrite_in_place(path)
    os.replace(tmp, path)


def scrub_input_history(path, texts: list[str], query: str = "") -> int:
    """Drop REPL input-history entries that typed any of these texts or have all
    the words of the query, and every `/forget` command (it names what was
    forgotten). Returns the number of entries dropped."""
    path = Path(path)
    words = query_words(query) if query.strip() else []
    texts = [t for t in texts if t and t.strip()]
    if not path.exists():
        return 0
    raw = path.read_text(encoding="utf-8", errors="replace")
    kept, dropped = [], 0
    for entry in _history_entries(raw):
        typed = "".join(l[1:] for l in entry if l.startswith("+"))
        typed = typed[:-1] if typed.endswith("\n") else typed
        command = typed.strip().lower()
        if typed.strip() and (command == "/forget" or command.startswith("/forget ")
                              or any(_typed_matches(typed, t) for t in texts)
                              or (words and _text_has_words(typed, words))):
            dropped += 1
        else:
            kept.append("".join(entry))
    if dropped:
        _write_private(path, "".join(kept))
    return dropped


def clear_input_history(path) -> int:
    """Forget everything: the whole input history goes."""
    path = Path(path)
    if not path.exists():
        return 0
    n = sum(1 for e in _history_entries(path.read_text(encoding="utf-8", errors="replace"))
            if any(l.startswith("+") for l in e))
    _write_private(path, "")
    return n
