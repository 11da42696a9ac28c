"""`me import` and `me export`: JSONL, lossless both ways.

A message line (the contract's import format):
  {"conversation": str, "role": "user"|"assistant", "content": str,
   "created_at": ISO 8601 (optional), "id": str (optional, kept as external_id)}
Export adds "type": "message" and writes feedback ("type": "feedback") and
profile rules ("type": "rule") with stable ids, so export -> import -> export
gives the same records, and importing twice (or importing an export back into
the database it came from) adds nothing.

Records made here get names like "me:12" (conversation 12), "me:34" (message
34), "me:feedback:5", "me:rule:6"; import recognises its own database's names
by id *and* content, so another database's "me:12" is never taken for ours.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

from mecli import learning, memory
from mecli.db import Message, Store
from mecli.environment import UsageError

ROLES = ("user", "assistant")
FEEDBACK_SOURCES = ("explicit", "implicit")
RULE_STATUSES = ("active", "candidate", "superseded")
LOCAL_NAME = re.compile(r"^me:(\d{1,18})(?::\d+)?$")
LOCAL_FEEDBACK = re.compile(r"^me:feedback:(\d{1,18})(?::\d+)?$")
LOCAL_RULE = re.compile(r"^me:rule:(\d{1,18})(?::\d+)?$")


@dataclass
class ImportReport:
    lines: int = 0
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


# --- reading and checking -------------------------------------------------------------


def read_lines(raw: bytes) -> list[str]:
    """The file's lines, if it is UTF-8 text. Lines end at \\n only: a JSON
    string may hold U+2028 or U+0085 unescaped, and they don't end a line."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError("import file is UTF-16 text, not UTF-8: convert it first "
                         "(e.g. iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8)")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise UsageError(f"import file has NUL bytes (line {line}): it is UTF-16 or binary, "
                         "not UTF-8 JSONL")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"import file is not UTF-8 text (line {line}: byte 0x{raw[e.start]:02x}): "
                         "convert it first (e.g. iconv -f LATIN1 -t UTF-8)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def normalize_time(value, where: str, key: str = "created_at") -> str | None:
    """An ISO 8601 time as stored: UTC, seconds. A time without a zone is UTC."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {key!r} must be an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: field {key!r} is not ISO 8601: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def _name(record: dict, key: str, where: str, required: bool = True) -> str | None:
    """A non-empty name (ids and conversation names may be JSON numbers too)."""
    value = record.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: missing field {key!r}")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {key!r} must be a non-empty string")
    record[key] = value
    return value


def _text(record: dict, key: str, where: str, allow_empty: bool = False) -> str:
    value = record.get(key)
    if value is None:
        raise ValueError(f"{where}: missing field {key!r}")
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{where}: field {key!r} must be a {'' if allow_empty else 'non-empty '}string")
    return value


def _flag(record: dict, key: str, where: str) -> None:
    value = record.get(key, False)
    if value is None:
        value = False
    if not isinstance(value, bool):
        raise ValueError(f"{where}: field {key!r} must be true or false")
    record[key] = value


def _ref(record: dict, key: str, where: str) -> None:
    value = record.get(key)
    if value is None:
        record[key] = None
        return
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{where}: field {key!r} must be [conversation, message id] or null")
    record[key] = [str(v) for v in value]


def check_record(record, where: str) -> dict:
    """A record, checked and normalized; ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    kind = record.get("type", "message")
    if kind == "message":
        _name(record, "conversation", where)
        if "role" not in record:
            raise ValueError(f"{where}: missing field 'role'")
        if record["role"] not in ROLES:
            raise ValueError(f"{where}: field 'role' must be 'user' or 'assistant', "
                             f"not {record['role']!r}")
        _text(record, "content", where, allow_empty=True)
        _name(record, "id", where, required=False)
        record["created_at"] = normalize_time(record.get("created_at"), where)
        if record.get("model") is not None and not isinstance(record["model"], str):
            raise ValueError(f"{where}: field 'model' must be a string")
        _flag(record, "interrupted", where)
    elif kind == "feedback":
        _name(record, "id", where)
        _text(record, "text", where)
        _text(record, "kind", where)
        if record.get("source") not in FEEDBACK_SOURCES:
            raise ValueError(f"{where}: field 'source' must be 'explicit' or 'implicit'")
        _ref(record, "message", where)
        _ref(record, "source_message", where)
        record["created_at"] = normalize_time(record.get("created_at"), where)
    elif kind == "rule":
        _name(record, "id", where)
        _text(record, "text", where)
        if record.get("status") not in RULE_STATUSES:
            raise ValueError(f"{where}: field 'status' must be one of {', '.join(RULE_STATUSES)}")
        if record.get("subject") is not None and not isinstance(record["subject"], str):
            raise ValueError(f"{where}: field 'subject' must be a string or null")
        _flag(record, "pinned", where)
        _flag(record, "manual", where)
        _name(record, "superseded_by", where, required=False)
        sources = record.get("sources") or []
        if not isinstance(sources, list) or not all(
                isinstance(s, (str, int)) and not isinstance(s, bool) for s in sources):
            raise ValueError(f"{where}: field 'sources' must be a list of feedback ids")
        record["sources"] = [str(s) for s in sources]
        for key in ("created_at", "first_seen", "last_seen"):
            record[key] = normalize_time(record.get(key), where, key)
    else:
        raise ValueError(f"{where}: unknown record type {kind!r} (message, feedback or rule)")
    return record


def parse_lines(lines: Iterable[str]) -> tuple[list[tuple[int, dict]], list[str]]:
    """Check every line first: (good records with line numbers, errors)."""
    good, errors = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: not JSON ({e.msg} at column {e.colno})")
            continue
        except RecursionError:
            errors.append(f"{where}: not JSON (nested too deeply)")
            continue
        try:
            good.append((n, check_record(record, where)))
        except ValueError as e:
            errors.append(str(e))
    return good, errors


# --- import ---------------------------------------------------------------------------------


class _Conversation:
    """What is known about one conversation during an import."""

    def __init__(self, cid: int, messages: list[Message]):
        self.id = cid
        self.by_external = {m.external_id: m.id for m in messages if m.external_id is not None}
        self.by_id = {m.id: m for m in messages}
        # Messages without ids are told apart by content; the n-th copy in the
        # file is a duplicate only if the database already has n copies.
        self.have = Counter((m.role, m.content, m.created_at) for m in messages)
        self.have_any_time = Counter((m.role, m.content) for m in messages)
        self.seen: Counter = Counter()
        self.last: Message | None = messages[-1] if messages else None


class _Importer:
    def __init__(self, store: Store, report: ImportReport, detect: bool, min_support: int):
        self.store = store
        self.report = report
        self.detect = detect
        self.min_support = min_support
        self.conversations: dict[str, _Conversation] = {}
        self.messages: dict[tuple[str, str], int] = {}
        self.feedback: dict[str, int] = {}
        self.rules: dict[str, int] = {}

    # conversations and messages

    def _load(self, cid: int) -> _Conversation:
        return _Conversation(cid, self.store.conversation_messages(cid))

    def _local_message(self, conv: _Conversation, record: dict) -> int | None:
        """Our own export's "me:N" for message N of this conversation, same content."""
        m = LOCAL_NAME.match(record.get("id") or "")
        if not m:
            return None
        local = conv.by_id.get(int(m.group(1)))
        if (local is not None and local.external_id is None and local.role == record["role"]
                and local.content == record["content"]
                and record.get("created_at") in (None, local.created_at)):
            return local.id
        return None

    def conversation(self, record: dict) -> _Conversation:
        name = record["conversation"]
        if name in self.conversations:
            return self.conversations[name]
        cid = self.store.conversation_by_external_id(name)
        if cid is None:
            m = LOCAL_NAME.match(name)
            if m and (c := self.store.conversation(int(m.group(1)))) and c["external_id"] is None:
                candidate = self._load(c["id"])
                if self._local_message(candidate, record) is not None:
                    self.conversations[name] = candidate
                    return candidate
            cid = self.store.new_conversation(external_id=name, created_at=record.get("created_at"))
            self.report.conversations += 1
            conv = _Conversation(cid, [])
        else:
            conv = self._load(cid)
        self.conversations[name] = conv
        return conv

    def message(self, record: dict) -> None:
        conv = self.conversation(record)
        name, external_id = record["conversation"], record.get("id")
        role, content, created_at = record["role"], record["content"], record.get("created_at")
        existing = None
        if external_id is not None:
            existing = conv.by_external.get(external_id) or self._local_message(conv, record)
        else:
            key = (role, content, created_at) if created_at else (role, content)
            conv.seen[key] += 1
            have = conv.have[key] if created_at else conv.have_any_time[key]
            if conv.seen[key] <= have:
                existing = -1
        if existing is not None:
            self.report.duplicates += 1
            if external_id is not None:
                self.messages[(name, external_id)] = existing
            return
        previous = conv.last
        mid = memory.store_message(self.store, conv.id, role, content, created_at=created_at,
                                   external_id=external_id, model=record.get("model"),
                                   interrupted=record.get("interrupted", False))
        stored = self.store.message(mid)
        conv.by_id[mid] = stored
        conv.last = stored
        self.report.messages += 1
        if external_id is not None:
            conv.by_external[external_id] = mid
            self.messages[(name, external_id)] = mid
        if self.detect and role == "user":
            about = previous.id if previous is not None and previous.role == "assistant" else None
            found = learning.observe_user_message(self.store, mid, content, about, self.min_support,
                                                  created_at=stored.created_at)
            self.report.learned += len(found)

    def message_ref(self, ref) -> int | None:
        if not ref:
            return None
        name, external_id = ref
        if (name, external_id) in self.messages:
            return self.messages[(name, external_id)]
        conv = self.conversations.get(name)
        if conv is None:
            cid = self.store.conversation_by_external_id(name)
            if cid is None:
                m = LOCAL_NAME.match(name)
                c = self.store.conversation(int(m.group(1))) if m else None
                if c is None or c["external_id"] is not None:
                    return None
                cid = c["id"]
            conv = self._load(cid)
        if external_id in conv.by_external:
            return conv.by_external[external_id]
        m = LOCAL_NAME.match(external_id)
        local = conv.by_id.get(int(m.group(1))) if m else None
        return local.id if local is not None and local.external_id is None else None

    # feedback and rules

    def _existing(self, record: dict, by_external_id, local_name, get) -> int | None:
        """The stored feedback item or rule an import record names: by its external id,
        or (an export of this same home) by its local name with the same text and time."""
        found = by_external_id(record["id"])
        if found is not None:
            return found
        m = local_name.match(record["id"])
        row = get(int(m.group(1))) if m else None
        if (row is not None and row["external_id"] is None and row["text"] == record["text"]
                and record.get("created_at") in (None, row["created_at"])):
            return row["id"]
        return None

    def feedback_record(self, record: dict) -> None:
        existing = self._existing(record, self.store.feedback_by_external_id, LOCAL_FEEDBACK,
                                  self.store.feedback)
        if existing is not None:
            self.feedback[record["id"]] = existing
            return
        self.feedback[record["id"]] = self.store.add_feedback(
            record["source"], record["kind"], record["text"],
            self.message_ref(record.get("message")), self.message_ref(record.get("source_message")),
            record.get("created_at"), external_id=record["id"])
        self.report.feedback += 1

    def rule_record(self, record: dict) -> bool:
        existing = self._existing(record, self.store.rule_by_external_id, LOCAL_RULE,
                                  self.store.rule)
        if existing is not None:
            self.rules[record["id"]] = existing
            return False
        first_seen = record.get("first_seen") or record.get("created_at")
        rid = self.store.add_rule(record["text"], record["status"], record.get("subject"),
                                  manual=record["manual"], pinned=record["pinned"],
                                  seen_at=first_seen, created_at=record.get("created_at"),
                                  external_id=record["id"])
        if record.get("last_seen"):
            self.store.update_rule(rid, last_seen=record["last_seen"])
        for source in record["sources"]:
            fid = self.feedback.get(source) or self.store.feedback_by_external_id(source)
            if fid:
                self.store.link_rule_source(rid, fid, first_seen or self.store.rule(rid)["first_seen"])
        self.rules[record["id"]] = rid
        self.report.rules += 1
        return True


def check_lines(lines: Iterable[str], *, skip_bad: bool) -> tuple[list[tuple[int, dict]], list[str]]:
    """parse_lines(), and without `skip_bad` a bad line is an error (nothing is imported)."""
    good, errors = parse_lines(lines)
    if errors and not skip_bad:
        more = f" (and {len(errors) - 1} more bad lines)" if len(errors) > 1 else ""
        raise UsageError(f"{errors[0]}{more}; nothing imported (--skip-bad imports the good lines)")
    return good, errors


def import_records(store: Store, lines: Iterable[str] | None = None, *, skip_bad: bool,
                   min_support: int, parsed=None, progress=None) -> ImportReport:
    """Import checked records in one transaction: all of them or, on an error, none.

    Bad lines are reported by number; without `skip_bad` nothing is imported.
    """
    good, errors = parsed if parsed is not None else check_lines(lines or [], skip_bad=skip_bad)
    report = ImportReport(lines=len(good), skipped=errors)
    # An export of `me` carries its feedback and rules: take them as they are
    # instead of detecting feedback again, so a round trip adds nothing.
    carries_profile = any(r.get("type") in ("feedback", "rule") for _, r in good)
    importer = _Importer(store, report, detect=not carries_profile, min_support=min_support)
    rules = []
    with store.transaction():
        for _, record in good:
            kind = record.get("type", "message")
            if kind == "message":
                importer.message(record)
                if progress:
                    progress(1)
            elif kind == "feedback":
                importer.feedback_record(record)
            else:
                rules.append(record)
        added = [record for record in rules if importer.rule_record(record)]
        for record in added:  # links between rules, once they all exist
            target = record.get("superseded_by")
            if target:
                tid = importer.rules.get(target) or store.rule_by_external_id(target)
                if tid:
                    store.update_rule(importer.rules[record["id"]], superseded_by=tid)
    return report


# --- export ---------------------------------------------------------------------------------


def _unique(preferred: str, taken: set[str]) -> str:
    """`preferred`, or `preferred:2`, `:3`... when an imported record already has that name."""
    name, n = preferred, 1
    while name in taken:
        n += 1
        name = f"{preferred}:{n}"
    taken.add(name)
    return name


def export_records(store: Store) -> Iterator[dict]:
    """Every message, feedback item and rule, oldest first, as JSON-ready records."""
    conversations = {c["id"]: c["external_id"] for c in store.conversations(-1)}
    taken_conversations = {e for e in conversations.values() if e is not None}
    conversation_names: dict[int, str] = {}
    for cid in sorted(conversations):
        conversation_names[cid] = conversations[cid] or _unique(f"me:{cid}", taken_conversations)

    taken_messages: dict[int, set[str]] = {}
    local_messages: list[tuple[int, int]] = []
    message_names: dict[int, str] = {}
    for m in store.all_messages():
        if m.external_id is not None:
            taken_messages.setdefault(m.conversation_id, set()).add(m.external_id)
            message_names[m.id] = m.external_id
        else:
            local_messages.append((m.conversation_id, m.id))
    for cid, mid in local_messages:
        message_names[mid] = _unique(f"me:{mid}", taken_messages.setdefault(cid, set()))

    def conversation_name(cid: int) -> str:
        if cid not in conversation_names:  # added while exporting
            c = store.conversation(cid)
            conversation_names[cid] = (c and c["external_id"]) or _unique(f"me:{cid}",
                                                                           taken_conversations)
        return conversation_names[cid]

    def message_ref(mid: int | None):
        if mid is None:
            return None
        m = store.message(mid)
        if m is None:
            return None
        return [conversation_name(m.conversation_id), message_names.get(m.id, f"me:{m.id}")]

    for m in store.all_messages():
        record = {"type": "message", "conversation": conversation_name(m.conversation_id),
                  "role": m.role, "content": m.content, "created_at": m.created_at,
                  "id": message_names.get(m.id) or m.external_id or f"me:{m.id}"}
        if m.model:
            record["model"] = m.model
        if m.interrupted:
            record["interrupted"] = True
        yield record

    feedback = store.all_feedback()
    taken_feedback = {f["external_id"] for f in feedback if f["external_id"] is not None}
    feedback_names = {f["id"]: f["external_id"] or _unique(f"me:feedback:{f['id']}", taken_feedback)
                      for f in feedback}
    for f in feedback:
        yield {"type": "feedback", "id": feedback_names[f["id"]], "source": f["source"],
               "kind": f["kind"], "text": f["text"], "message": message_ref(f["message_id"]),
               "source_message": message_ref(f["source_message_id"]), "created_at": f["created_at"]}

    rules = store.rules()
    taken_rules = {r["external_id"] for r in rules if r["external_id"] is not None}
    rule_names = {r["id"]: r["external_id"] or _unique(f"me:rule:{r['id']}", taken_rules)
                  for r in rules}
    for r in rules:
        yield {"type": "rule", "id": rule_names[r["id"]], "text": r["text"], "subject": r["subject"],
               "status": r["status"], "support": r["support"], "pinned": r["pinned"],
               "manual": r["manual"], "superseded_by": rule_names.get(r["superseded_by"]),
               "sources": [feedback_names[s] for s in r["sources"] if s in feedback_names],
               "created_at": r["created_at"], "first_seen": r["first_seen"],
               "last_seen": r["last_seen"]}


def export_lines(store: Store) -> Iterator[str]:
    """JSONL, readable UTF-8 (a text that can't be UTF-8, a lone surrogate, is escaped)."""
    for record in export_records(store):
        line = json.dumps(record, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(record)
        yield line + "\n"
