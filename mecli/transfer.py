"""`me import` and `me export`: JSONL, lossless both ways.

A message line (the contract's import format):
  {"conversation": str, "role": "user"|"assistant", "content": str,
   "created_at": ISO 8601 (optional), "id": str (optional, kept as external_id)}
Export adds "type": "message" and writes feedback ("type": "feedback") and
profile rules ("type": "rule") with stable ids, so export -> import -> export
gives the same records, and importing twice adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

from mecli import learning, memory
from mecli.db import Store
from mecli.environment import UsageError

ROLES = ("user", "assistant")


@dataclass
class ImportReport:
    messages: int = 0
    duplicates: int = 0
    conversations: int = 0
    feedback: int = 0
    rules: int = 0
    learned: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"messages": self.messages, "duplicates": self.duplicates,
                "conversations": self.conversations, "feedback": self.feedback,
                "rules": self.rules, "learned": self.learned, "skipped": len(self.skipped),
                "errors": self.skipped}


def normalize_time(value, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: created_at must be an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: created_at {value!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def _str(record: dict, key: str, where: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip() and key != "content"):
        raise ValueError(f"{where}: field {key!r} must be a non-empty string")
    return value


def parse_lines(lines: Iterable[str]) -> tuple[list[tuple[int, dict]], list[str]]:
    """Validate every line first: (good records with line numbers, errors)."""
    good, errors = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: not JSON ({e.msg})")
            continue
        try:
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object")
            kind = record.get("type", "message")
            if kind == "message":
                _str(record, "conversation", where)
                if record.get("role") not in ROLES:
                    raise ValueError(f"{where}: field 'role' must be 'user' or 'assistant'")
                if not isinstance(record.get("content"), str):
                    raise ValueError(f"{where}: field 'content' must be a string")
                if "id" in record and record["id"] is not None and not isinstance(record["id"], (str, int)):
                    raise ValueError(f"{where}: field 'id' must be a string")
                record["created_at"] = normalize_time(record.get("created_at"), where)
            elif kind == "feedback":
                for key in ("id", "text", "source", "kind"):
                    _str(record, key, where)
                record["created_at"] = normalize_time(record.get("created_at"), where)
            elif kind == "rule":
                for key in ("id", "text", "status"):
                    _str(record, key, where)
                if record["status"] not in ("active", "candidate", "superseded"):
                    raise ValueError(f"{where}: unknown rule status {record['status']!r}")
            else:
                raise ValueError(f"{where}: unknown record type {kind!r}")
        except ValueError as e:
            errors.append(str(e))
            continue
        good.append((n, record))
    return good, errors


def read_lines(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"import file is not UTF-8 text (byte {e.start}): convert it first") from None
    return text.splitlines()


def import_records(store: Store, lines: list[str], *, skip_bad: bool, min_support: int,
                   progress=None) -> ImportReport:
    good, errors = parse_lines(lines)
    if errors and not skip_bad:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UsageError(f"{errors[0]}{more}; nothing imported (use --skip-bad to import the good lines)")
    report = ImportReport(skipped=errors)
    # An export of `me` carries its feedback and rules: take them as they are
    # instead of detecting feedback again, so a round trip adds nothing.
    carries_profile = any(r.get("type") in ("feedback", "rule") for _, r in good)
    conversations: dict[str, int] = {}
    message_ids: dict[tuple[str, str], int] = {}
    feedback_ids: dict[str, int] = {}
    rule_ids: dict[str, int] = {}
    deferred_rules = []

    for _, record in good:
        kind = record.get("type", "message")
        if kind == "message":
            _import_message(store, record, conversations, message_ids, report,
                            detect=not carries_profile, min_support=min_support)
            if progress:
                progress(1)
        elif kind == "feedback":
            _import_feedback(store, record, message_ids, conversations, feedback_ids, report)
        else:
            deferred_rules.append(record)
    with store.transaction():
        for record in deferred_rules:
            _import_rule(store, record, feedback_ids, rule_ids, report)
        for record in deferred_rules:  # second pass: links between rules
            if record.get("superseded_by") and record["id"] in rule_ids:
                target = rule_ids.get(record["superseded_by"]) or store.rule_by_external_id(
                    record["superseded_by"])
                if target:
                    store.update_rule(rule_ids[record["id"]], superseded_by=target)
    return report


def _conversation(store: Store, name: str, created_at: str | None, cache: dict, report) -> int:
    if name in cache:
        return cache[name]
    cid = store.conversation_by_external_id(name)
    if cid is None:
        cid = store.new_conversation(external_id=name, created_at=created_at)
        report.conversations += 1
    cache[name] = cid
    return cid


def _import_message(store, record, conversations, message_ids, report, *, detect, min_support):
    name = record["conversation"]
    cid = _conversation(store, name, record.get("created_at"), conversations, report)
    external_id = None if record.get("id") is None else str(record["id"])
    role, content, created_at = record["role"], record["content"], record.get("created_at")
    if store.message_exists(cid, role, content, external_id, created_at):
        report.duplicates += 1
        if external_id is not None:
            message_ids[(name, external_id)] = store.one(
                "SELECT id FROM messages WHERE conversation_id = ? AND external_id = ?",
                (cid, external_id))
        return
    previous = store.conversation_messages(cid, limit=1)
    mid = memory.store_message(store, cid, role, content, created_at=created_at,
                               external_id=external_id, model=record.get("model"),
                               interrupted=record.get("interrupted", False))
    report.messages += 1
    if external_id is not None:
        message_ids[(name, external_id)] = mid
    if detect and role == "user":
        about = previous[0].id if previous and previous[0].role == "assistant" else None
        found = learning.observe_user_message(store, mid, content, about, min_support,
                                              created_at=created_at)
        report.learned += len(found)


def _message_ref(store, ref, message_ids, conversations) -> int | None:
    if not ref:
        return None
    name, external_id = ref
    if (name, external_id) in message_ids:
        return message_ids[(name, external_id)]
    cid = conversations.get(name) or store.conversation_by_external_id(name)
    if cid is None:
        return None
    return store.one("SELECT id FROM messages WHERE conversation_id = ? AND external_id = ?",
                     (cid, external_id))


def _import_feedback(store, record, message_ids, conversations, feedback_ids, report):
    existing = store.feedback_by_external_id(record["id"])
    if existing:
        feedback_ids[record["id"]] = existing
        return
    feedback_ids[record["id"]] = store.add_feedback(
        record["source"], record["kind"], record["text"],
        _message_ref(store, record.get("message"), message_ids, conversations),
        _message_ref(store, record.get("source_message"), message_ids, conversations),
        record.get("created_at"), external_id=record["id"])
    report.feedback += 1


def _import_rule(store, record, feedback_ids, rule_ids, report):
    existing = store.rule_by_external_id(record["id"])
    if existing:
        rule_ids[record["id"]] = existing
        return
    rid = store.add_rule(record["text"], record["status"], record.get("subject"),
                         manual=bool(record.get("manual")), pinned=bool(record.get("pinned")),
                         seen_at=record.get("first_seen"), created_at=record.get("created_at"),
                         external_id=record["id"])
    if record.get("last_seen"):
        store.update_rule(rid, last_seen=record["last_seen"])
    for source in record.get("sources") or []:
        fid = feedback_ids.get(source) or store.feedback_by_external_id(source)
        if fid:
            store.link_rule_source(rid, fid, record.get("first_seen") or record.get("created_at"))
    rule_ids[record["id"]] = rid
    report.rules += 1


# --- export -----------------------------------------------------------------------


def export_records(store: Store) -> Iterator[dict]:
    conversation_names: dict[int, str] = {}

    def conversation_name(cid: int) -> str:
        if cid not in conversation_names:
            c = store.conversation(cid)
            conversation_names[cid] = c["external_id"] or f"me:{cid}"
        return conversation_names[cid]

    def message_ref(mid: int | None):
        if mid is None:
            return None
        m = store.message(mid)
        if m is None:
            return None
        return [conversation_name(m.conversation_id), m.external_id or f"me:{m.id}"]

    for m in store.all_messages():
        record = {"type": "message", "conversation": conversation_name(m.conversation_id),
                  "role": m.role, "content": m.content, "created_at": m.created_at,
                  "id": m.external_id or f"me:{m.id}"}
        if m.model:
            record["model"] = m.model
        if m.interrupted:
            record["interrupted"] = True
        yield record
    feedback_names = {}
    for f in store.all_feedback():
        fid = f["external_id"] or f"me:feedback:{f['id']}"
        feedback_names[f["id"]] = fid
        yield {"type": "feedback", "id": fid, "source": f["source"], "kind": f["kind"],
               "text": f["text"], "message": message_ref(f["message_id"]),
               "source_message": message_ref(f["source_message_id"]), "created_at": f["created_at"]}
    rules = store.rules()
    rule_names = {r["id"]: r["external_id"] or f"me:rule:{r['id']}" for r in rules}
    for r in rules:
        yield {"type": "rule", "id": rule_names[r["id"]], "text": r["text"], "subject": r["subject"],
               "status": r["status"], "pinned": r["pinned"], "manual": r["manual"],
               "superseded_by": rule_names.get(r["superseded_by"]),
               "sources": [feedback_names[s] for s in r["sources"] if s in feedback_names],
               "created_at": r["created_at"], "first_seen": r["first_seen"],
               "last_seen": r["last_seen"]}
