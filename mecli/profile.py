"""What the user does to the profile by hand: feedback, add, explain, pin, rm, edit."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile

from mecli import learning
from mecli.environment import Environment, MeError, UsageError

MAX_FEEDBACK_CHARS = 2000


def give_feedback(app, text: str, *, to: int | None = None, general: bool = False,
                  kind: str = "correction") -> dict:
    """`me feedback`, `/feedback`, `/good`, `/bad`: explicit feedback, about an answer."""
    text = " ".join(text.split())
    if not text and kind not in ("good", "bad"):
        raise UsageError("empty feedback: say what should change")
    if len(text) > MAX_FEEDBACK_CHARS:
        raise UsageError(f"feedback is {len(text):,} characters; keep it under {MAX_FEEDBACK_CHARS:,} "
                         "(say the rule, not the whole story)")
    store = app.store
    message_id = None
    if to is not None:
        m = store.message(to)
        if m is None:
            raise UsageError(f"no message with id {to}")
        if m.role != "assistant":
            raise UsageError(f"message {to} is the user's, not an answer: give an answer's id")
        message_id = to
    elif not general:
        latest = store.latest_assistant_message()
        message_id = latest.id if latest else None
    with store.transaction():
        fid, outcome = learning.record_feedback(
            store, text or kind, source="explicit", kind=kind, message_id=message_id,
            min_support=app.config.rule_min_support)
    result = {"id": fid, "message_id": message_id, "kind": kind, "text": text, "source": "explicit"}
    if outcome:
        result["outcome"] = outcome
        result["rule"] = store.rule(outcome["rule_id"])
    return result


def _rule_or_error(store, rule_id: int) -> dict:
    rule = store.rule(rule_id)
    if rule is None:
        raise UsageError(f"no rule with id {rule_id}")
    return rule


def add_rule(app, text: str, pin: bool = False) -> dict:
    text = " ".join(text.split())
    if not text:
        raise UsageError("empty rule")
    if len(text) > 500:
        raise UsageError("a rule is one short sentence (at most 500 characters)")
    p = learning.phrase(text)
    subject = p.subject if p else " ".join(sorted(learning.content_words(text)))
    store = app.store
    with store.transaction():
        rid = store.add_rule(learning.as_sentence(text), "active", subject, manual=True, pinned=pin)
    return store.rule(rid)


def explain(app, rule_id: int) -> tuple[dict, list[dict]]:
    rule = _rule_or_error(app.store, rule_id)
    return rule, app.store.feedback_for_rule(rule_id)


def set_pinned(app, rule_id: int, pinned: bool) -> dict:
    store = app.store
    rule = _rule_or_error(store, rule_id)
    if pinned and rule["status"] != "active":
        with store.transaction():
            store.update_rule(rule_id, pinned=1, status="active")
    else:
        with store.transaction():
            store.update_rule(rule_id, pinned=int(pinned))
    return store.rule(rule_id)


def remove_rule(app, rule_id: int, forget_sources: bool = False) -> dict:
    store = app.store
    rule = _rule_or_error(store, rule_id)
    counts = {"rules": 1, "feedback": 0}
    if forget_sources and rule["sources"]:
        counts = store.forget_feedback(rule["sources"])
        if store.rule(rule_id) is not None:
            store.delete_rule(rule_id)
        store.scrub()
    else:
        store.delete_rule(rule_id)
    return counts


# --- editing in $EDITOR -------------------------------------------------------------------

EDIT_HEADER = """\
# The preference profile of `me`. One rule a line: ID | STATUS | TEXT
#   STATUS: active, candidate or pinned.  Delete a line to remove the rule.
#   Add a line "new | active | Your rule." to add one.  Lines starting with # are ignored.
# Superseded rules are not listed; `me profile --all` shows them.
"""
LINE = re.compile(r"^\s*(\d+|new)\s*\|\s*(active|candidate|pinned)\s*\|\s*(.+?)\s*$", re.I)


def render_for_edit(store) -> str:
    lines = [EDIT_HEADER]
    for r in store.rules(("active", "candidate")):
        status = "pinned" if r["pinned"] else r["status"]
        lines.append(f"{r['id']} | {status} | {r['text']}")
    return "\n".join(lines) + "\n"


def parse_edit(text: str, store) -> list[tuple[int | None, str, str]]:
    """[(rule id or None for new, status, text)]; raises UsageError naming each bad line."""
    out, errors, seen = [], [], set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            errors.append(f"line {n}: expected 'ID | active|candidate|pinned | text'")
            continue
        rid = None if m.group(1).lower() == "new" else int(m.group(1))
        if rid is not None:
            if store.rule(rid) is None:
                errors.append(f"line {n}: no rule with id {rid}")
                continue
            if rid in seen:
                errors.append(f"line {n}: rule {rid} listed twice")
                continue
            seen.add(rid)
        out.append((rid, m.group(2).lower(), m.group(3)))
    # Two active rules that say opposite things about one subject can't both hold.
    active = [(n, learning.phrase(t)) for n, (_, s, t) in enumerate(out) if s in ("active", "pinned")]
    for i, (_, a) in enumerate(active):
        for _, b in active[i + 1:]:
            if a and b and a.subject == b.subject and (
                    (a.value and b.value and a.value != b.value) or (a.value is None and a.positive != b.positive)):
                errors.append(f"rules {a.rule!r} and {b.rule!r} contradict each other: keep one")
    if errors:
        raise UsageError("; ".join(errors))
    return out


def apply_edit(store, parsed: list[tuple[int | None, str, str]]) -> dict:
    counts = {"added": 0, "changed": 0, "removed": 0}
    keep = {rid for rid, _, _ in parsed if rid is not None}
    with store.transaction():
        for rule in store.rules(("active", "candidate")):
            if rule["id"] not in keep:
                store.delete_rule(rule["id"])
                counts["removed"] += 1
        for rid, status, text in parsed:
            pinned = status == "pinned"
            status = "active" if pinned else status
            text = learning.as_sentence(text)
            if rid is None:
                p = learning.phrase(text)
                store.add_rule(text, status, p.subject if p else None, manual=True, pinned=pinned)
                counts["added"] += 1
                continue
            rule = store.rule(rid)
            if (rule["text"], rule["status"], rule["pinned"]) != (text, status, pinned):
                store.update_rule(rid, text=text, status=status, pinned=int(pinned))
                counts["changed"] += 1
    return counts


def edit_in_editor(app, env: Environment) -> str:
    store = app.store
    original = render_for_edit(store)
    editor = env.environ.get("VISUAL") or env.environ.get("EDITOR") or "vi"
    fd, path = tempfile.mkstemp(prefix="me-profile-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(original)
        text = original
        while True:
            try:
                code = subprocess.call([*shlex.split(editor), path])
            except OSError as e:
                raise UsageError(f"cannot run editor {editor!r}: {e.strerror}") from None
            if code != 0:
                raise MeError(f"editor {editor!r} exited with status {code}; profile unchanged")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text == original:
                return "profile unchanged"
            try:
                parsed = parse_edit(text, store)
                break
            except UsageError as e:
                if not env.stdin_isatty:
                    raise UsageError(f"profile unchanged: {e.message}") from None
                env.stderr.write(f"me: {e.message}\nPress Enter to edit again, or Ctrl-C to give up. ")
                env.stderr.flush()
                env.stdin.readline()
        counts = apply_edit(store, parsed)
        return f"profile saved: {counts['added']} added, {counts['changed']} changed, {counts['removed']} removed"
    finally:
        os.unlink(path)
