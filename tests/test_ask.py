"""End to end: one-shot `me` against the real bundled model, with a temp ME_HOME."""

import sqlite3

import pytest


def test_one_shot_answers_and_stores_both_turns(me, store):
    r = me("what is a GGUF file?", "--max-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "\x1b[" not in r.stdout  # piped: plain text, no escape codes
    convs = store.conversations(10)
    assert len(convs) == 1 and convs[0]["messages"] == 2
    msgs = store.conversation_messages(convs[0]["id"])
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[0].content == "what is a GGUF file?"
    assert msgs[1].content.strip() == r.stdout.strip()
    assert msgs[1].model.endswith(".gguf") and msgs[1].completion_tokens > 0


def test_ask_subcommand_json_contract(me):
    r = me("ask", "--json", "Say hello", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    doc = r.json()
    for key in ("id", "conversation_id", "content", "timings"):
        assert key in doc
    for key in ("ttft_ms", "total_ms", "prompt_tokens", "cached_tokens", "completion_tokens"):
        assert key in doc["timings"]
    assert doc["timings"]["prompt_tokens"] > 0 and doc["timings"]["completion_tokens"] > 0


def test_piped_input_is_part_of_the_prompt(me):
    r = me("--dry-run", "summarize", input="The secret word is pumpernickel.\n")
    assert r.returncode == 0, r.stderr
    user = r.json()["messages"][-1]
    assert user["role"] == "user"
    assert user["content"].startswith("summarize")
    assert "pumpernickel" in user["content"]
    r = me("summarize", "--max-tokens", "8", input="The secret word is pumpernickel.\n")
    assert r.returncode == 0 and r.stdout.strip()


def test_continue_adds_to_the_latest_conversation(me, store):
    assert me("My cat is called Tiberius.", "--max-tokens", "8").returncode == 0
    r = me("-c", "--dry-run", "What is my cat called?")
    sent = [m["content"] for m in r.json()["messages"]]
    assert "My cat is called Tiberius." in sent
    r = me("-c", "--json", "What is my cat called?", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert len(store.conversations(10)) == 1
    assert store.conversations(10)[0]["messages"] == 4


def test_continue_with_nothing_to_continue_is_a_usage_error(me):
    r = me("-c", "hello")
    assert r.returncode == 2
    assert "no conversation" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_does_not_load_the_model_or_store(me, store):
    r = me("--dry-run", "hello", env={"ME_MODEL": "/nonexistent/model.gguf"})
    assert r.returncode == 0, r.stderr
    assert r.json()["messages"][0]["role"] == "system"
    assert store.counts()["messages"] == 0


@pytest.mark.parametrize("stdin, message", [
    (b"\x00\x01\x02binary", "binary"),
    (b"caf\xe9 latin-1", "UTF-8"),
])
def test_bad_stdin_is_refused(me, store, stdin, message):
    r = me("summarize", input=stdin)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert store.counts()["messages"] == 0


def test_empty_prompt_is_a_usage_error(me, store):
    r = me("ask", "   ")
    assert r.returncode == 2 and "empty prompt" in r.stderr
    assert store.counts()["messages"] == 0


def test_missing_model_file(me, store):
    r = me("hello", "--model", "/nonexistent/model.gguf")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    assert store.counts()["messages"] == 0


def test_corrupt_model_file(me, store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    r = me("hello", "--model", str(bad))
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert store.counts()["messages"] == 0
    notgguf = tmp_path / "text.gguf"
    notgguf.write_text("hello")
    r = me("hello", "--model", str(notgguf))
    assert r.returncode == 2 and "not a GGUF" in r.stderr


def test_embedding_gguf_is_not_a_chat_model(me, store, minilm):
    r = me("hello", "--model", str(minilm))
    assert r.returncode == 2 and "not a chat model" in r.stderr
    assert store.counts()["messages"] == 0


def test_prompt_larger_than_context_trims_piped_input(me, me_home, store):
    (me_home / "config.toml").write_text("n_ctx = 512\nmax_tokens = 16\n")
    big = "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(400))
    r = me("summarize this", input=big)
    assert r.returncode == 0, r.stderr
    assert "trimmed" in r.stderr
    stored = store.conversation_messages(store.conversations(1)[0]["id"])[0].content
    assert stored.startswith("summarize this") and len(stored) < len(big)


def test_typed_prompt_too_long_is_refused(me, me_home, store):
    (me_home / "config.toml").write_text("n_ctx = 256\n")
    r = me("word " * 2000)
    assert r.returncode == 2 and "too long" in r.stderr
    assert store.counts()["messages"] == 0


def test_database_file_is_private_and_in_wal_mode(me, me_home):
    assert me("hi", "--max-tokens", "4").returncode == 0
    db = me_home / "me.db"
    assert db.stat().st_mode & 0o777 == 0o600
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ctrl_c_mid_answer_keeps_the_partial_answer(me_env, me_home, store):
    import signal
    import subprocess
    import sys
    import time

    (me_home / "config.toml").write_text("max_tokens = 2000\ntemperature = 0.8\n")
    proc = subprocess.Popen([sys.executable, "-m", "mecli", "Write a very long story about a dragon."],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=me_env)
    first = proc.stdout.read(20)  # the answer has started streaming
    assert first
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    msgs = store.conversation_messages(store.conversations(1)[0]["id"])
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].interrupted == 1 and msgs[1].content.strip()
    assert msgs[1].content.startswith((first + out).decode("utf-8", "replace").strip()[:10])


def test_recalled_memory_is_dropped_before_the_prompt_is_cut(me, me_home, store):
    import json

    lines = [json.dumps({"conversation": f"c{i}", "role": "user",
                         "content": f"Note {i} about the garden: tomatoes, basil and peppers " * 6})
             for i in range(12)]
    assert me("import", "-", input="\n".join(lines)).returncode == 0
    (me_home / "config.toml").write_text("n_ctx = 512\nmax_tokens = 8\nmemory_tokens = 2000\n")
    dry = me("--dry-run", "what grows in the garden with tomatoes?").json()
    assert "Memory:" in dry["messages"][0]["content"] and dry["recalled"]
    r = me("--json", "what grows in the garden with tomatoes?")
    assert r.returncode == 0, r.stderr
    assert r.json()["recalled"] == [] and r.json()["timings"]["prompt_tokens"] < 512
