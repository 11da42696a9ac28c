"""`me export` and `me import`: contract JSONL, lossless round trips, no duplicates,
and bad files refused with one clear line and an untouched database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mecli import memory
from mecli.db import Store

CONTRACT_LINES = [
    {"conversation": "trip-2024", "role": "user", "content": "Plan three days in Kyoto for me.",
     "created_at": "2024-04-01T09:00:00Z", "id": "t1"},
    {"conversation": "trip-2024", "role": "assistant", "content": "Day 1: Fushimi Inari. Day 2: Arashiyama.",
     "created_at": "2024-04-01T09:00:05Z", "id": "t2"},
    {"conversation": "trip-2024", "role": "user",
     "content": "From now on always answer in French. Which temple first?",
     "created_at": "2024-04-01T09:01:00+02:00", "id": "t3"},
    {"conversation": "cooking", "role": "user", "content": "How long do I boil an egg?"},
    {"conversation": "cooking", "role": "assistant", "content": "About nine minutes for hard-boiled."},
]


def jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def records(result) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def counts(home: Path) -> dict:
    s = Store(home / "me.db")
    try:
        return s.counts()
    finally:
        s.close()


@pytest.fixture
def other_home(tmp_path):
    home = tmp_path / "other"
    home.mkdir()
    return home


# --- export ---------------------------------------------------------------------------------


def test_export_is_contract_jsonl(me, store):
    cid = store.new_conversation()
    u = memory.store_message(store, cid, "user", "no, be brief. Café ☕ and naïve",
                             created_at="2024-01-02T03:04:05+00:00")
    a = memory.store_message(store, cid, "assistant", "D'accord.", model="x.gguf")
    f1 = store.add_feedback("implicit", "correction", "no, be brief.", None, u)
    f2 = store.add_feedback("explicit", "correction", "use metric units", a)
    r1 = store.add_rule("Keep answers short.", "candidate", "length=short")
    store.link_rule_source(r1, f1, "2024-01-02T03:04:05+00:00")
    r2 = store.add_rule("Use metric units.", "active", "units=metric")
    store.link_rule_source(r2, f2, "2024-01-02T03:04:05+00:00")
    store.add_rule("Call the user Bob.", "active", "name", manual=True)
    out = records(me("export"))
    messages = [r for r in out if r["type"] == "message"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "no, be brief. Café ☕ and naïve"), ("assistant", "D'accord.")]
    for m in messages:
        assert {"conversation", "role", "content", "created_at", "id"} <= set(m)
        assert isinstance(m["conversation"], str) and isinstance(m["id"], str)
    assert messages[0]["created_at"] == "2024-01-02T03:04:05+00:00"
    feedback = [r for r in out if r["type"] == "feedback"]
    assert {f["text"] for f in feedback} == {"no, be brief.", "use metric units"}
    rules = [r for r in out if r["type"] == "rule"]
    assert {r["status"] for r in rules} == {"active", "candidate"}
    for r in rules:
        assert {"id", "text", "status", "sources"} <= set(r)
    by_text = {r["text"]: r for r in rules}
    assert by_text["Call the user Bob."]["manual"] is True
    metric = next(r for r in rules if "metric" in r["text"].lower())
    assert [f["text"] for f in feedback if f["id"] in metric["sources"]] == ["use metric units"]


def test_export_of_an_empty_home_is_empty_and_creates_nothing(me, me_home):
    r = me("export")
    assert r.returncode == 0 and r.stdout == ""
    assert not (me_home / "me.db").exists()


# --- import and round trips ----------------------------------------------------------------------


def test_import_stores_indexes_and_detects_feedback(me, store):
    r = me("import", "-", "--json", input=jsonl(CONTRACT_LINES))
    assert r.returncode == 0, r.stderr
    report = r.json()
    assert report["messages"] == 5 and report["conversations"] == 2 and report["duplicates"] == 0
    assert report["learned"] >= 1
    hits = me("search", "Kyoto", "--json").json()["results"]
    assert hits and hits[0]["external_id"] in ("t1", "t2")
    assert hits[0]["conversation_id"] == store.conversation_by_external_id("trip-2024")
    t3 = next(m for m in store.all_messages() if m.external_id == "t3")
    assert t3.created_at == "2024-04-01T07:01:00+00:00"
    rules = me("profile", "--json").json()["rules"]
    assert len(rules) == 1 and "French" in rules[0]["text"]  # detected, as if chatted
    assert rules[0]["text"] in json.dumps(me("--dry-run", "hi").json())


def test_imported_messages_get_vectors(me, minilm):
    env = {"ME_EMBEDDING_MODEL": str(minilm)}
    r = me("import", "-", "--json", input=jsonl(CONTRACT_LINES), env=env)
    assert r.returncode == 0, r.stderr
    assert r.json()["embedded"] == 5
    hits = me("search", "japanese shrine itinerary", "--json", "-k", "2", env=env).json()["results"]
    assert any("Kyoto" in h["content"] or "Fushimi" in h["content"] for h in hits)


def test_round_trip_is_lossless_and_import_twice_adds_nothing(me, me_home, other_home, store, tmp_path):
    assert me("import", "-", input=jsonl(CONTRACT_LINES)).returncode == 0
    assert me("Say hello", "--max-tokens", "4").returncode == 0
    assert me("feedback", "be more concise").returncode == 0
    assert me("feedback", "keep answers short").returncode == 0
    assert me("profile", "add", "Call me Ada").returncode == 0
    old = store.add_rule("Answer in German.", "superseded", "language=german")
    store.update_rule(old, superseded_by=store.add_rule("Answer in Dutch.", "active", "language=dutch"))
    first = me("export")
    exported = records(first)
    kinds = {r["type"] for r in exported}
    assert kinds == {"message", "feedback", "rule"}
    assert any(r["type"] == "rule" and r["status"] == "superseded" and r["superseded_by"]
               for r in exported)
    dump = tmp_path / "export.jsonl"
    dump.write_text(first.stdout, encoding="utf-8")

    env = {"ME_HOME": str(other_home)}
    r = me("import", str(dump), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert r.json()["learned"] == 0  # feedback and rules come from the file, not detected again
    assert records(me("export", env=env)) == exported
    def profile(env=None):
        keys = ("text", "status", "support", "pinned", "manual", "first_seen", "last_seen")
        return [{k: r[k] for k in keys} for r in me("profile", "--all", "--json", env=env).json()["rules"]]

    assert profile(env) == profile()

    before = counts(other_home)
    r = me("import", str(dump), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert r.json()["messages"] == 0 and r.json()["duplicates"] == len(
        [x for x in exported if x["type"] == "message"])
    assert r.json()["feedback"] == 0 and r.json()["rules"] == 0
    assert counts(other_home) == before
    assert records(me("export", env=env)) == exported

    # Its own export, imported back into the same home, adds nothing either.
    before = store.counts()
    r = me("import", str(dump), "--json")
    assert r.returncode == 0, r.stderr
    assert r.json()["messages"] == 0 and r.json()["feedback"] == 0 and r.json()["rules"] == 0
    assert store.counts() == before
    assert records(me("export")) == exported


def test_contract_file_imported_twice_adds_nothing(me, store):
    text = jsonl(CONTRACT_LINES)
    assert me("import", "-", input=text).returncode == 0
    before = (store.counts(), [m.as_dict() for m in store.all_messages()])
    r = me("import", "-", "--json", input=text)
    assert r.returncode == 0, r.stderr
    assert r.json()["messages"] == 0 and r.json()["duplicates"] == 5 and r.json()["learned"] == 0
    assert (store.counts(), [m.as_dict() for m in store.all_messages()]) == before


def test_repeated_lines_without_ids_are_kept(me, store):
    lines = [{"conversation": "c", "role": "user", "content": "ok"},
             {"conversation": "c", "role": "assistant", "content": "Fine."},
             {"conversation": "c", "role": "user", "content": "ok"},
             {"conversation": "c", "role": "assistant", "content": "Fine."}]
    assert me("import", "-", input=jsonl(lines)).returncode == 0
    assert store.counts()["messages"] == 4
    assert me("import", "-", input=jsonl(lines)).returncode == 0
    assert store.counts()["messages"] == 4


def test_names_never_collide_across_homes(me, me_home, other_home, store, tmp_path):
    """Home B has its own conversation 1 and imports A's "me:1": B's export keeps both apart."""
    env_a = {"ME_HOME": str(other_home)}
    a = Store(other_home / "me.db")
    cid = a.new_conversation()
    memory.store_message(a, cid, "user", "from home A")
    memory.store_message(a, cid, "assistant", "answer in A")
    a.close()
    dump = tmp_path / "a.jsonl"
    dump.write_text(me("export", env=env_a).stdout, encoding="utf-8")

    cid = store.new_conversation()
    memory.store_message(store, cid, "user", "from home B")
    memory.store_message(store, cid, "assistant", "answer in B")
    assert me("import", str(dump)).returncode == 0
    b = records(me("export"))
    names = [(r["conversation"], r["id"]) for r in b if r["type"] == "message"]
    assert len(set(names)) == 4 and len({c for c, _ in names}) == 2

    third = tmp_path / "third"
    third.mkdir()
    dump_b = tmp_path / "b.jsonl"
    dump_b.write_text(jsonl(b), encoding="utf-8")
    assert me("import", str(dump_b), env={"ME_HOME": str(third)}).returncode == 0
    assert records(me("export", env={"ME_HOME": str(third)})) == b


def test_line_separators_inside_content_survive(me, other_home, store, tmp_path):
    cid = store.new_conversation()
    text = "one\u2028two\u0085three\r\nfour\x0cfive"
    memory.store_message(store, cid, "user", text)
    dump = tmp_path / "x.jsonl"
    dump.write_bytes(me("export").stdout.encode("utf-8"))
    r = me("import", str(dump), env={"ME_HOME": str(other_home)})
    assert r.returncode == 0, r.stderr
    s = Store(other_home / "me.db")
    assert [m.content for m in s.all_messages()] == [text]
    s.close()


# --- bad input ---------------------------------------------------------------------------------


def one_clear_line(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


BAD = [
    ('{"conversation": "c", "role": "user", "content": "hi"', "not JSON"),
    ('{"conversation": "c", "content": "hi"}', "missing field 'role'"),
    ('{"conversation": "c", "role": "user"}', "missing field 'content'"),
    ('{"role": "user", "content": "hi"}', "missing field 'conversation'"),
    ('{"conversation": "c", "role": "system", "content": "hi"}', "'role'"),
    ('{"conversation": "c", "role": "user", "content": 3}', "'content'"),
    ('{"conversation": "c", "role": "user", "content": "hi", "created_at": "yesterday"}', "ISO 8601"),
    ('["a", "list"]', "JSON object"),
    ('{"type": "feedback", "id": "f", "text": "x", "kind": "k", "source": "alien"}', "'source'"),
    ('{"type": "rule", "id": "r", "text": "x", "status": "maybe"}', "'status'"),
    ('{"type": "tweet", "text": "x"}', "unknown record type"),
]


@pytest.mark.parametrize("bad, says", BAD)
def test_a_bad_line_is_reported_by_number_and_nothing_is_imported(me, me_home, bad, says):
    good = jsonl(CONTRACT_LINES[:2])
    r = me("import", "-", input=good + "\n" + bad + "\n" + jsonl(CONTRACT_LINES[2:]))
    one_clear_line(r, "line 4", says, "--skip-bad")
    assert not (me_home / "me.db").exists()  # checked before the database is even opened


def test_skip_bad_imports_the_good_lines_and_reports_the_others(me, store):
    text = (jsonl(CONTRACT_LINES[:2]) + "this is not json\n"
            + '{"conversation": "c", "content": "no role"}\n' + jsonl(CONTRACT_LINES[2:]))
    r = me("import", "-", "--skip-bad", "--json", input=text)
    assert r.returncode == 0, r.stderr
    report = r.json()
    assert report["messages"] == 5 and report["skipped"] == 2
    assert report["errors"][0].startswith("line 3:") and report["errors"][1].startswith("line 4:")
    r = me("import", "-", "--skip-bad", input=text)
    assert r.returncode == 0
    assert "skipped line 3" in r.stderr and "skipped line 4" in r.stderr


@pytest.mark.parametrize("encoding, says", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"),
                                            ("latin-1", "not UTF-8"), ("cp1252", "not UTF-8")])
def test_a_file_in_another_encoding_is_refused(me, me_home, tmp_path, encoding, says):
    path = tmp_path / "in.jsonl"
    lines = CONTRACT_LINES + [{"conversation": "c", "role": "user", "content": "Crème brûlée, s'il vous plaît"}]
    path.write_bytes(jsonl(lines).encode(encoding))
    r = me("import", str(path))
    one_clear_line(r, says)
    assert not (me_home / "me.db").exists()


def test_bad_import_leaves_an_existing_database_untouched(me, me_home, store):
    assert me("import", "-", input=jsonl(CONTRACT_LINES)).returncode == 0
    before = (store.counts(), records(me("export")))
    r = me("import", "-", input=jsonl(CONTRACT_LINES) + "{oops\n")
    one_clear_line(r, "line 6")
    assert (store.counts(), records(me("export"))) == before


def test_missing_file_and_empty_input(me, me_home, tmp_path):
    one_clear_line(me("import", str(tmp_path / "nope.jsonl")), "cannot read")
    r = me("import", "-", "--json", input="")
    assert r.returncode == 0 and r.json()["messages"] == 0
