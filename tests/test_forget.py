"""`me forget` really forgets, and `--incognito` neither reads nor writes memory.

Most tests seed the database directly (fast) and drive the real `me` command;
the on-disk test chats with the real model and embeds with MiniLM.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from mecli import forgetting, learning, memory
from mecli.db import Store


def unique() -> str:
    # One token for the full-text index (no hyphens), so it can't hide as pieces.
    return "zq" + uuid.uuid4().hex


def files_with(home: Path, needle: str) -> list[str]:
    """Every file under ME_HOME (database, -wal, -shm, history, caches) holding the bytes."""
    data = needle.encode("utf-8")
    return [str(p.relative_to(home)) for p in home.rglob("*")
            if p.is_file() and data in p.read_bytes()]


def seed(store: Store, *turns: tuple[str, str], conversation: int | None = None,
         created_at: str | None = None) -> list[int]:
    cid = conversation or store.new_conversation(created_at=created_at)
    ids = []
    for user, answer in turns:
        ids.append(memory.store_message(store, cid, "user", user, created_at=created_at))
        ids.append(memory.store_message(store, cid, "assistant", answer, created_at=created_at))
    return ids


def feedback_rule(store: Store, rule: str, subject: str, *texts_about: tuple[str, int | None]
                  ) -> tuple[int, list[int]]:
    """A learned rule with its feedback items, made by hand (what learning would make
    changes as it gets better; what forgetting does with it doesn't)."""
    fids = [store.add_feedback("explicit", "correction", text, about) for text, about in texts_about]
    rid = store.add_rule(rule, "active", subject)
    for fid in fids:
        store.link_rule_source(rid, fid, "2024-01-01T00:00:00+00:00")
    return rid, fids


def history_file(home: Path, *entries: str) -> Path:
    """A REPL input history in prompt_toolkit's FileHistory format."""
    path = home / "input_history"
    text = ""
    for n, entry in enumerate(entries):
        text += f"\n# 2024-05-0{n % 9 + 1} 10:00:00.000000\n"
        text += "".join(f"+{line}\n" for line in entry.split("\n"))
    path.write_text(text, encoding="utf-8")
    return path


def snapshot(home: Path) -> dict:
    """What the database says, to check that a refused command changed nothing."""
    s = Store(home / "me.db")
    try:
        return {"counts": s.counts(), "messages": [m.as_dict() for m in s.all_messages()],
                "feedback": s.all_feedback(), "rules": s.rules()}
    finally:
        s.close()


# --- the text is gone from disk ------------------------------------------------------------


def test_forgotten_text_is_in_no_file_under_me_home(me, me_home, minilm):
    secret, other = unique(), unique()
    env = {"ME_EMBEDDING_MODEL": str(minilm)}
    lines = [{"conversation": "trip", "role": "user", "content": f"Plan a weekend in Lisbon {other}"},
             {"conversation": "trip", "role": "assistant", "content": "Visit Belem and Alfama."}]
    r = me("import", "-", input="".join(json.dumps(x) + "\n" for x in lines), env=env)
    assert r.returncode == 0, r.stderr
    r = me(f"My locker code is {secret}, keep it safe", "--max-tokens", "4", env=env)
    assert r.returncode == 0, r.stderr
    r = me("feedback", f"never use the word {secret} in answers", env=env)
    assert r.returncode == 0, r.stderr
    history_file(me_home, "hello", f"My locker code is {secret}, keep it safe",
                 f"/feedback never use the word {secret} in answers", f"/forget {secret}")
    cache = me_home / "cache" / "prompts"
    cache.mkdir(parents=True)
    (cache / "state.bin").write_bytes(b"kv" + secret.encode() + b"kv")
    s = Store(me_home / "me.db")  # planner statistics sample index keys (FTS terms too)
    s.conn.execute("ANALYZE")
    s.close()
    assert "me.db" in files_with(me_home, secret)

    r = me("forget", secret, "--yes", "--json", env=env)
    assert r.returncode == 0, r.stderr
    done = r.json()
    assert done["forgotten"]["messages"] == 2 and done["forgotten"]["feedback"] == 1
    assert done["forgotten"]["history_lines"] == 3

    assert files_with(me_home, secret) == []
    assert (me_home / "input_history").read_text().count("+hello") == 1
    # The rest is still there, and still found by words and by meaning.
    assert files_with(me_home, other) == ["me.db"]
    hits = me("search", "Lisbon weekend", "--json", env=env).json()["results"]
    assert {h["content"] for h in hits} >= {f"Plan a weekend in Lisbon {other}"}
    assert me("search", secret, "--json").json()["results"] == []  # words only: no match


def test_forget_by_id_reindexes_the_answer_that_quoted_it(me, me_home, store):
    secret = unique()
    ids = seed(store, (f"my pin is {secret}", "Noted."), ("what is the weather", "Sunny."))
    assert [h.message.id for h in memory.search(store, None, secret)] == ids[:2]
    r = me("forget", "--id", str(ids[0]), "--yes")
    assert r.returncode == 0, r.stderr
    assert "1 messages" in r.stderr
    assert store.message(ids[1]) is not None  # the answer stays...
    assert memory.search(store, None, secret) == []  # ...without the question in its index
    assert memory.search(store, None, "Noted")[0].message.id == ids[1]
    store.close()
    assert files_with(me_home, secret) == []


# --- selection, listing, confirmation -------------------------------------------------------


def test_dry_run_lists_and_deletes_nothing(me, me_home, store):
    seed(store, ("I adopted a beagle named Rufus", "Congratulations!"), ("sort a list", "sorted()"))
    before = snapshot(me_home)
    r = me("forget", "beagle Rufus", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "I adopted a beagle named Rufus" in r.stdout and "sort a list" not in r.stdout
    assert "dry run" in r.stderr
    r = me("forget", "beagle", "--dry-run", "--json")
    assert r.returncode == 0 and r.json()["dry_run"] is True and len(r.json()["messages"]) == 2
    assert snapshot(me_home) == before


def test_refuses_without_yes_when_stdin_is_not_a_terminal(me, me_home, store):
    seed(store, ("forget me not", "ok"))
    before = snapshot(me_home)
    r = me("forget", "--all")
    assert r.returncode == 2
    assert "--yes" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    assert snapshot(me_home) == before


def test_selectors_conversation_dates_and_ids(me, store):
    old = seed(store, ("old news about the harbour", "ok"), created_at="2023-01-05T10:00:00+00:00")
    mid = seed(store, ("middle news about the bridge", "ok"), created_at="2024-03-01T10:00:00+00:00")
    new = seed(store, ("new news about the tower", "ok"), created_at="2025-07-01T10:00:00+00:00")
    conv_of = {i: store.message(i).conversation_id for i in old + mid + new}

    r = me("forget", "--before", "2024-01-01", "--dry-run", "--json")
    assert r.json()["messages"] == old
    r = me("forget", "--since", "2024-01-01", "--before", "2025-01-01T00:00:00Z", "--dry-run", "--json")
    assert r.json()["messages"] == mid
    r = me("forget", "--conversation", str(conv_of[new[0]]), "--dry-run", "--json")
    assert r.json()["messages"] == new
    r = me("forget", "--id", str(old[0]), "--id", str(new[1]), "--dry-run", "--json")
    assert r.json()["messages"] == [old[0], new[1]]
    # A query narrows the dates: only the bridge, not the tower.
    r = me("forget", "news", "--since", "2024-01-01", "--before", "2025-01-01", "--dry-run", "--json")
    assert r.json()["messages"] == mid

    r = me("forget", "--since", "2024-01-01", "--yes")
    assert r.returncode == 0, r.stderr
    assert [m.id for m in store.all_messages()] == old
    assert not store.conversation_exists(conv_of[new[0]])


def test_query_takes_matches_not_merely_nearest_neighbours(me, store, minilm):
    env = {"ME_EMBEDDING_MODEL": str(minilm)}
    seed(store, ("My dentist appointment is on Tuesday at 3pm", "I'll remember."))
    seed(store, ("How do I sort a list in Python?", "Use sorted()."))
    seed(store, ("Recommend a thriller novel", "Try Gone Girl."))
    r = me("reindex", env=env)
    assert r.returncode == 0, r.stderr
    r = me("forget", "dentist", "--dry-run", "--json", env=env)
    assert r.returncode == 0, r.stderr
    contents = [store.message(i).content for i in r.json()["messages"]]
    assert "My dentist appointment is on Tuesday at 3pm" in contents
    assert not any("Python" in c or "thriller" in c or "sorted" in c for c in contents)
    # By meaning: not all of these words are in it, but it is about that.
    r = me("forget", "upcoming visit to the dentist", "--dry-run", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert "My dentist appointment is on Tuesday at 3pm" in [
        store.message(i).content for i in r.json()["messages"]]
    r = me("forget", "quantum chromodynamics lattice", "--dry-run", env=env)
    assert r.returncode == 2 and "nothing matches" in r.stderr


def test_all_forgets_everything_including_rules_and_history(me, me_home, store):
    seed(store, ("hello there", "hi"))
    learning.record_feedback(store, "always use metric units", source="explicit", kind="correction",
                             min_support=2)
    store.add_rule("Call the user Bob.", "active", "name", manual=True)
    history_file(me_home, "hello there", "/profile")
    r = me("forget", "--all", "--yes")
    assert r.returncode == 0, r.stderr
    assert store.counts() == {"conversations": 0, "messages": 0, "feedback": 0, "rules": 0}
    assert "hello" not in (me_home / "input_history").read_text()
    assert me("forget", "--all", "--yes").returncode == 0  # nothing left: still fine


# --- the cascade -------------------------------------------------------------------------------


def test_rules_lose_forgotten_sources_and_keep_the_others(me, store):
    secret = unique()
    a = seed(store, ("hi", "A long answer."))
    b = seed(store, ("hello", "Another long answer."))
    c = seed(store, ("hey", "Yet another answer."))
    words, (f1, f2) = feedback_rule(
        store, f"Never use the word {secret} in answers.", f"free:-:answer word {secret}",
        (f"never use the word {secret} in answers", a[1]), ("never use the word lol in answers", b[1]))
    tabs, (f3,) = feedback_rule(store, "Indent code with tabs.", "indentation=tabs",
                                ("use tabs for indentation", c[1]))
    manual = store.add_rule("Call the user Bob.", "active", "name", manual=True)

    r = me("forget", "--id", str(a[1]), "--id", str(c[1]), "--yes")
    assert r.returncode == 0, r.stderr
    kept = store.rule(words)
    assert kept["sources"] == [f2] and kept["support"] == 1
    # Worded again after the feedback that is left.
    assert secret not in kept["text"] + kept["subject"] and "lol" in kept["text"]
    assert store.rule(tabs) is None  # its only source is gone
    assert store.rule(manual) is not None
    assert {f["id"] for f in store.all_feedback()} == {f2}


def test_feedback_from_a_forgotten_message_goes(me, store):
    ids = seed(store, ("From now on always answer in French. Hello!", "Bonjour!"))
    fid = store.add_feedback("implicit", "preference", "From now on always answer in French.",
                             None, ids[0])  # what detection stores: feedback *from* the message
    rid = store.add_rule("Answer in French.", "active", "language=french")
    store.link_rule_source(rid, fid, "2024-01-01T00:00:00+00:00")
    r = me("forget", "--conversation", str(store.message(ids[0]).conversation_id), "--yes")
    assert r.returncode == 0, r.stderr
    assert store.counts() == {"conversations": 0, "messages": 0, "feedback": 0, "rules": 0}


def test_profile_rm_forget_sources(me, store):
    secret = unique()
    ids = seed(store, ("hi", "Hello, how can I help you today?"))
    rid, (fid,) = feedback_rule(store, "Never greet the user.", "free:-:greet",
                                (f"never greet me, {secret}", ids[1]))
    r = me("profile", "rm", str(rid), "--forget-sources")
    assert r.returncode == 0, r.stderr
    assert store.rule(rid) is None and store.feedback(fid) is None
    assert store.message(ids[1]) is not None


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    ((), "say what to forget"),
    (("--yes",), "say what to forget"),
    (("nonexistentwordxyz", "--yes"), "nothing matches"),
    (("--id", "999", "--yes"), "no message with id 999"),
    (("--conversation", "999", "--yes"), "no conversation with id 999"),
    (("--before", "last tuesday", "--yes"), "not a date"),
    (("--since", "2024-13-45", "--yes"), "not a date"),
    (("--since", "2025-01-01", "--before", "2024-01-01", "--yes"), "not before"),
    (("--id", "abc"), "--id"),
])
def test_bad_forget_input_is_one_clear_line(me, me_home, store, args, says):
    seed(store, ("keep this message", "and this answer"))
    before = snapshot(me_home)
    r = me("forget", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert says in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    if args != ("--id", "abc"):  # that one is click's usage message
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert snapshot(me_home) == before


# --- input history and caches (no subprocess) -------------------------------------------------------


def test_scrub_input_history_keeps_the_format_and_other_entries(tmp_path):
    path = history_file(tmp_path, "first line\nsecond line", "keep me", "say zqsecret please",
                        "/feedback  be   brief", "/forget something", "ok")
    dropped = forgetting.scrub_input_history(path, ["say zqsecret please", "be brief"])
    assert dropped == 3
    text = path.read_text()
    assert "+first line\n+second line\n" in text and "+keep me\n" in text and "+ok\n" in text
    assert "zqsecret" not in text and "brief" not in text and "/forget" not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # prompt_toolkit still reads it, entry by entry.
    from prompt_toolkit.history import FileHistory

    assert list(FileHistory(str(path)).load_history_strings()) == [
        "ok", "keep me", "first line\nsecond line"]
    # A short text doesn't take every entry it happens to be part of.
    assert forgetting.scrub_input_history(path, ["ok"]) == 1
    assert "keep me" in path.read_text()


def test_clear_caches_removes_saved_states(tmp_path):
    from mecli.config import Paths

    paths = Paths(tmp_path, tmp_path)
    (paths.cache_dir / "prompts" / "x").mkdir(parents=True)
    (paths.cache_dir / "prompts" / "x" / "a.kv").write_bytes(b"secret")
    (paths.cache_dir / "prompts" / "b.kv").write_bytes(b"secret")
    assert forgetting.clear_caches(paths) == 2
    assert not any(p.is_file() for p in paths.cache_dir.rglob("*"))


# --- incognito ---------------------------------------------------------------------------------------


def test_incognito_on_a_fresh_home_creates_no_database(me, me_home):
    r = me("--incognito", "Say hi", "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert not (me_home / "me.db").exists() and not (me_home / "input_history").exists()


def test_incognito_reads_nothing_and_writes_nothing(me, me_home, store):
    fact, rule = unique(), unique()
    seed(store, (f"My favourite colour is {fact}", "Noted."))
    store.add_rule(f"Always sign answers with {rule}.", "active", "sign", manual=True, pinned=True)
    sent = json.dumps(me("--dry-run", "what is my favourite colour").json())
    assert fact in sent and rule in sent  # what incognito must leave out
    r = me("--incognito", "--dry-run", "what is my favourite colour")
    assert r.returncode == 0, r.stderr
    messages = r.json()["messages"]
    assert fact not in json.dumps(messages) and rule not in json.dumps(messages)
    assert [m["role"] for m in messages] == ["system", "user"]

    before = snapshot(me_home)
    r = me("--incognito", "--json", "what is my favourite colour", "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    doc = r.json()
    assert doc["id"] is None and doc["recalled"] == [] and doc["rules"] == []
    r = me("--incognito", "From now on always answer in French.", "--max-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert snapshot(me_home) == before
    assert me("--incognito", "-c", "hi").returncode == 2


def test_forget_rule_and_plain_id_list_api(me_home, store):
    """What `profile rm --forget-sources` and the REPL's /forget call."""
    from mecli.config import Paths

    paths = Paths(me_home, me_home)
    secret = unique()
    ids = seed(store, (f"hi {secret}", "Hello!"), ("bye", "Goodbye!"))
    rid, (fid,) = feedback_rule(store, f"Never use the word {secret}.", f"free:-:word {secret}",
                                (f"never use the word {secret} in answers", ids[3]))
    history_file(me_home, f"/feedback never use the word {secret} in answers", "bye")
    counts = forgetting.forget_rule(store, paths, rid)
    assert counts["feedback"] == 1 and counts["rules"] == 1 and counts["history_lines"] == 1
    assert store.rule(rid) is None and store.feedback(fid) is None
    assert store.message(ids[3]) is not None  # the answer it was about stays
    counts = forgetting.forget(store, paths, [ids[0]])
    assert counts["messages"] == 1 and counts["reindexed"] == 1
    store.close()
    assert files_with(me_home, secret) == []


@pytest.mark.parametrize("answer, left", [("n", 2), ("y", 0)])
def test_asks_before_deleting_on_a_terminal(me_env, store, answer, left):
    import os
    import subprocess
    import sys

    seed(store, ("the ferry leaves at noon", "ok"))
    master, slave = os.openpty()
    try:
        os.write(master, f"{answer}\n".encode())
        proc = subprocess.run([sys.executable, "-m", "mecli", "forget", "ferry"], stdin=slave,
                              capture_output=True, text=True, env=me_env, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert "for good?" in proc.stderr and "the ferry leaves at noon" in proc.stdout
    assert store.counts()["messages"] == left
