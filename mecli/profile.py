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
    result = {"id": fid, "message_id": message_id, "kind": kind, "text": text, "source": "explicit",
              "general": message_id is None}
    if outcome:
        result["outcome"] = outcome
        result["rule"] = store.rule(outcome["rule_id"])
        result["rules"] = [store.rule(o["rule_id"]) for o in outcome.get("outcomes", [outcome])]
    else:
        result["rules"] = []
        if kind != "good" and text:
            result["note"] = ("kept as feedback; no general rule in it (say it as an instruction, "
                              "e.g. 'always ...', 'never ...', 'use ...', or `me profile add`)")
    return result


def _rule_or_error(store, rule_id: int) -> dict:
    rule = store.rule(rule_id)
    if rule is None:
        raise UsageError(f"no rule with id {rule_id}")
    return rule


MAX_RULE_CHARS = 500


def add_rule(app, text: str, pin: bool = False) -> dict:
    """An active rule by hand. It supersedes live rules that say the opposite on its subject
    (kept, visible with --all); a rule with the same text is marked as added by hand."""
    text = " ".join(text.split())
    if not text.strip(" .!"):
        raise UsageError("empty rule: say what `me` should do, e.g. 'Use metric units.'")
    if len(text) > MAX_RULE_CHARS:
        raise UsageError(f"a rule is one short sentence (at most {MAX_RULE_CHARS} characters)")
    store = app.store
    key = learning.key_for(text)
    text = learning.as_sentence(text)
    with store.transaction():
        same = [r for r in store.rules(("active", "candidate")) if r["text"].lower() == text.lower()]
        if same:
            rid = same[0]["id"]
            store.update_rule(rid, text=text, status="active", manual=1,
                              pinned=int(pin or same[0]["pinned"]))
        else:
            rid = store.add_rule(text, "active", key, manual=True, pinned=pin)
        superseded = learning.supersede_contradicting(store, rid, key)
    rule = store.rule(rid)
    if superseded:
        rule["superseded"] = superseded
    return rule


def explain(app, rule_id: int) -> tuple[dict, list[dict]]:
    rule = _rule_or_error(app.store, rule_id)
    return rule, app.store.feedback_for_rule(rule_id)


def set_pinned(app, rule_id: int, pinned: bool) -> dict:
    """Pin (always prepended, first) or unpin. Pinning a candidate or superseded rule makes it
    active again, and it supersedes what contradicts it: the user's explicit choice wins."""
    store = app.store
    rule = _rule_or_error(store, rule_id)
    if pinned and rule["status"] != "active":
        with store.transaction():
            store.update_rule(rule_id, pinned=1, status="active", superseded_by=None)
            learning.supersede_contradicting(store, rule_id, learning.rule_key(rule))
    else:
        with store.transaction():
            store.update_rule(rule_id, pinned=int(pinned))
    return store.rule(rule_id)


def remove_rule(app, rule_id: int, forget_sources: bool = False) -> dict:
    """`me profile rm`: the rule goes; with forget_sources, the feedback behind it
    too, for real (see forgetting.forget_rule)."""
    from mecli import forgetting

    store = app.store
    _rule_or_error(store, rule_id)
    if forget_sources:
        return forgetting.forget_rule(store, app.paths, rule_id)
    store.delete_rule(rule_id, revive_superseded=False)
    return {"rules": 1, "feedback": 0}


# --- editing in $EDITOR -------------------------------------------------------------------

EDIT_HEADER = """\
# The preference profile of `me`. One rule a line: ID | STATUS | TEXT
#   STATUS: active, candidate or pinned.  Delete a line to remove the rule.
#   Add a line "new | active | Your rule." to add one.  Lines starting with # are ignored.
# Superseded rules are not listed; `me profile --all` shows them.
"""
LINE = re.compile(r"^\s*(\d+|new)\s*\|\s*(\w+)\s*\|\s*(.*?)\s*$", re.I)
STATUSES = ("active", "candidate", "pinned")


def render_for_edit(store) -> str:
    lines = [EDIT_HEADER]
    for r in store.rules(("active", "candidate")):
        status = "pinned" if r["pinned"] else r["status"]
        lines.append(f"{r['id']} | {status} | {r['text']}")
    return "\n".join(lines) + "\n"


def parse_edit(text: str, store) -> list[tuple[int | None, str, str]]:
    """[(rule id or None for new, status, text)]; raises UsageError naming each bad line."""
    if not text.strip():
        raise UsageError("the file is empty (to remove every rule, keep the header and delete "
                         "the rule lines)")
    out, errors, seen = [], [], set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            errors.append(f"line {n}: expected 'ID | active|candidate|pinned | text'")
            continue
        status, rule_text = m.group(2).lower(), " ".join(m.group(3).split())
        if status not in STATUSES:
            errors.append(f"line {n}: unknown status {m.group(2)!r} (use active, candidate or pinned)")
            continue
        if not rule_text.strip(" .!"):
            errors.append(f"line {n}: the rule text is empty (delete the line to remove the rule)")
            continue
        if len(rule_text) > MAX_RULE_CHARS:
            errors.append(f"line {n}: a rule is one short sentence (at most {MAX_RULE_CHARS} characters)")
            continue
        rid = None if m.group(1).lower() == "new" else int(m.group(1))
        if rid is not None:
            rule = store.rule(rid)
            if rule is None:
                errors.append(f"line {n}: no rule with id {rid}")
                continue
            if rule["status"] == "superseded":
                errors.append(f"line {n}: rule {rid} is superseded; add it again as 'new | active | ...'")
                continue
            if rid in seen:
                errors.append(f"line {n}: rule {rid} listed twice")
                continue
            seen.add(rid)
        out.append((rid, status, rule_text))
    # Two active rules that say opposite things about one subject can't both hold.
    active = [(t, _edit_key(store, rid, t)) for rid, s, t in out if s in ("active", "pinned")]
    for i, (ta, ka) in enumerate(active):
        for tb, kb in active[i + 1:]:
            if learning.contradicts(ka, kb):
                errors.append(f"rules {learning.as_sentence(ta)!r} and {learning.as_sentence(tb)!r} "
                              "contradict each other: keep one")
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UsageError(errors[0] + more if len(errors) > 3 else "; ".join(errors))
    return out


def _edit_key(store, rid: int | None, text: str) -> str:
    """The key of an edited line: the stored one when the text is unchanged."""
    if rid is not None:
        rule = store.rule(rid)
        if rule and learning.as_sentence(text) == rule["text"]:
            return learning.rule_key(rule)
    return learning.key_for(text)


def apply_edit(store, parsed: list[tuple[int | None, str, str]]) -> dict:
    counts = {"added": 0, "changed": 0, "removed": 0}
    keep = {rid for rid, _, _ in parsed if rid is not None}
    touched = []
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
                touched.append(store.add_rule(text, status, learning.key_for(text), manual=True,
                                              pinned=pinned))
                counts["added"] += 1
                continue
            rule = store.rule(rid)
            if (rule["text"], rule["status"], rule["pinned"]) != (text, status, pinned):
                fields = {"status": status, "pinned": int(pinned)}
                if text != rule["text"]:  # edited by hand: its subject is what the new text says
                    fields.update(text=text, subject=learning.key_for(text), manual=1)
                store.update_rule(rid, **fields)
                touched.append(rid)
                counts["changed"] += 1
        # A removed rule gives back the rule it had superseded; what the file says wins over it.
        for rid in touched:
            rule = store.rule(rid)
            if rule["status"] == "active":
                learning.supersede_contradicting(store, rid, learning.rule_key(rule))
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
