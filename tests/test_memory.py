"""Memory: hybrid search (FTS5 + sqlite-vec), recall into the prompt, and the fallbacks.

The real `me` in a subprocess with a temp ME_HOME; vectors from the shared MiniLM GGUF.
"""

from __future__ import annotations

import json
import random
import struct

import pytest

FACT = "My sister Ingrid moved to Tromsø last spring and keeps three beehives there."

HISTORY = [  # an earlier conversation, as `me import` lines
    ("trip", "user", "We are planning a hiking trip to the Dolomites in July.", "2024-03-01T09:00:00Z", "t1"),
    ("trip", "assistant", "Great choice: book the huts early, they fill up by May.", "2024-03-01T09:00:05Z", "t2"),
    ("bread", "user", "My sourdough starter is called Clint Yeastwood.", "2024-04-02T18:30:00Z", "b1"),
    ("bread", "assistant", "A fine name. Feed Clint twice a day at room temperature.", "2024-04-02T18:30:04Z", "b2"),
    ("car", "user", "The car is due for its inspection in October.", "2024-05-10T08:00:00Z", "c1"),
    ("car", "assistant", "I'll remember: inspection in October.", "2024-05-10T08:00:03Z", "c2"),
]


def jsonl(rows=HISTORY) -> str:
    return "".join(json.dumps({"conversation": c, "role": r, "content": t, "created_at": at, "id": i}) + "\n"
                   for c, r, t, at, i in rows)


def system_message(result) -> str:
    messages = result.json()["messages"]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


@pytest.fixture
def vec_env(minilm) -> dict:
    return {"ME_EMBEDDING_MODEL": str(minilm)}


# --- recall into a new conversation ---------------------------------------------------------


def test_past_fact_is_recalled_into_a_new_conversation(me, me_home, store, vec_env):
    (me_home / "config.toml").write_text("temperature = 0.0\nseed = 1\n")  # greedy: reproducible
    r = me(FACT, "--max-tokens", "8", env=vec_env)
    assert r.returncode == 0, r.stderr
    first = store.conversations(10)[0]["id"]
    fact_id = store.conversation_messages(first)[0].id
    # Embedded after the answer: both turns have a vector from MiniLM.
    (vm,) = store.vec_models()
    assert vm["dim"] == 384 and vm["vectors"] == 2

    question = "Where does my sister live these days?"
    r = me("--dry-run", question, env=vec_env)
    assert r.returncode == 0, r.stderr
    system = system_message(r)
    block = system[system.index("Memory:"):]
    assert "Tromsø" in block and "beehives" in block
    assert block.count("> [") >= 1 and f"[{store.message(fact_id).created_at[:10]}]" in block
    assert fact_id in r.json()["recalled"]
    assert r.json()["messages"][-1] == {"role": "user", "content": question}

    # --no-memory: nothing recalled.
    r = me("--dry-run", "--no-memory", question, env=vec_env)
    assert "Tromsø" not in system_message(r) and r.json()["recalled"] == []

    # The real model answers with it, in a new conversation.
    r = me("--json", question, "--max-tokens", "16", env=vec_env)
    assert r.returncode == 0, r.stderr
    doc = r.json()
    assert fact_id in doc["recalled"]
    assert doc["conversation_id"] != first
    assert "troms" in doc["content"].lower(), doc["content"]


def test_recall_skips_the_current_conversation(me, store):
    assert me("import", "-", input=jsonl()).returncode == 0
    r = me("--dry-run", "what is my sourdough starter called?")
    assert "Clint Yeastwood" in system_message(r)
    trip = store.conversation_by_external_id("bread")
    r = me("--dry-run", "--conversation", str(trip), "what is my sourdough starter called?")
    assert "Memory:" not in system_message(r)  # it's in this conversation's history instead
    assert any("Clint Yeastwood" in m["content"] for m in r.json()["messages"][1:])


# --- me search --------------------------------------------------------------------------------


def test_search_json_contract(me, vec_env):
    r = me("import", "-", "--json", input=jsonl(), env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json()["embedded"] == len(HISTORY)
    r = me("search", "--json", "when is the car inspection", env=vec_env)
    assert r.returncode == 0, r.stderr
    results = r.json()["results"]
    assert results, r.stdout
    for item in results:
        assert set(item) == {"id", "external_id", "conversation_id", "role", "content",
                             "created_at", "score"}
    scores = [item["score"] for item in results]
    assert scores == sorted(scores, reverse=True)
    best = results[0]
    assert best["external_id"] in ("c1", "c2") and "inspection" in best["content"]
    assert best["created_at"].startswith("2024-05-10T08:00")
    assert r.stderr == ""
    r = me("search", "--json", "-k", "2", "sourdough", env=vec_env)
    assert len(r.json()["results"]) == 2
    assert r.json()["results"][0]["external_id"] == "b1"


def test_search_finds_by_meaning_without_shared_words(me, vec_env):
    me("import", "-", input=jsonl(), env=vec_env)
    r = me("search", "--json", "-k", "2", "mountain walking holiday", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json()["results"][0]["external_id"] in ("t1", "t2")


@pytest.mark.parametrize("query", ['"', "AND(", "*", "NEAR(", "-", "'", "^x", "a:b", "OR", "()", "🙂"])
def test_fts_syntax_and_punctuation_queries_dont_crash(me, query):
    assert me("import", "-", input=jsonl()).returncode == 0
    r = me("search", "--json", query)
    assert r.returncode == 0, r.stderr
    assert isinstance(r.json()["results"], list)
    assert "Traceback" not in r.stderr


def test_fts_syntax_in_python(store):
    """The same, without a process per query (and more of them)."""
    from mecli import memory

    cid = store.new_conversation()
    memory.store_message(store, cid, "user", 'say "AND(" and * to NEAR me: a OR b')
    for query in ['"', "AND(", "*", "NEAR(", "a OR b", '"""', "AND", "NOT x", "x*", "{a b}", "",
                  "   ", "\x00", "col:val", "^", "+-", "AND OR NOT"]:
        hits = memory.search(store, None, query, k=5)
        assert isinstance(hits, list)
    assert memory.search(store, None, "AND(", k=5)  # the word is still found


def test_empty_database(me, vec_env):
    r = me("search", "--json", "anything at all", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json() == {"results": []}
    r = me("--dry-run", "hello there", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert "Memory:" not in system_message(r)
    assert r.json()["recalled"] == []
    r = me("search", "no matches please")
    assert r.returncode == 0 and "no matches" in r.stderr


# --- fallbacks ----------------------------------------------------------------------------------


def test_embedding_model_that_fails_to_load_means_words_only(me, me_home, vec_env):
    assert me("import", "-", input=jsonl(), env=vec_env).returncode == 0  # vectors stored
    broken = me_home / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    for spec in (str(broken), str(me_home / "missing.gguf")):
        r = me("search", "--json", "sourdough starter", env={"ME_EMBEDDING_MODEL": spec})
        assert r.returncode == 0, r.stderr
        assert r.json()["results"][0]["external_id"] == "b1"
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "words only" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    r = me("--dry-run", "what is my sourdough starter called?", env={"ME_EMBEDDING_MODEL": str(broken)})
    assert r.returncode == 0, r.stderr
    assert "Clint Yeastwood" in system_message(r)
    assert len([line for line in r.stderr.splitlines() if "words only" in line]) == 1


def test_import_with_broken_embedding_model_says_so_once(me, me_home, store):
    broken = me_home / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    r = me("import", "-", "--json", input=jsonl(), env={"ME_EMBEDDING_MODEL": str(broken)})
    assert r.returncode == 0, r.stderr
    assert r.json()["messages"] == len(HISTORY) and r.json()["embedded"] == 0
    assert len([line for line in r.stderr.splitlines() if "words only" in line]) == 1
    assert store.counts()["messages"] == len(HISTORY)


def test_no_embedding_model_means_words_only(me, store, vec_env):
    assert me("import", "-", input=jsonl(), env=vec_env).returncode == 0
    r = me("search", "--json", "sourdough starter", env={"ME_EMBEDDING_MODEL": "none"})
    assert r.returncode == 0, r.stderr
    assert r.json()["results"][0]["external_id"] == "b1"
    # Words only: a query sharing no word with any message finds nothing.
    r = me("search", "--json", "mountain walking holiday", env={"ME_EMBEDDING_MODEL": "none"})
    assert r.json()["results"] == []
    r = me("--dry-run", "sourdough?", env={"ME_EMBEDDING_MODEL": "none"})
    assert "Clint Yeastwood" in system_message(r)


def _random_vectors(store, name: str, dim: int) -> int:
    rng = random.Random(1)
    model_id = store.vec_model(name, dim)
    items = []
    for m in store.all_messages():
        v = [rng.gauss(0, 1) for _ in range(dim)]
        n = sum(x * x for x in v) ** 0.5
        items.append((m.id, [x / n for x in v]))
    store.add_vectors(model_id, items)
    return model_id


def test_switching_embedding_model_never_mixes_vectors(me, store, minilm, vec_env):
    assert me("import", "-", input=jsonl()).returncode == 0  # words only: no vectors yet
    # Vectors of another model (768 dimensions) are in the database.
    _random_vectors(store, "bge-base-en-v1.5-f16.gguf", 768)
    r = me("search", "--json", "mountain walking holiday", env=vec_env)
    assert r.returncode == 0, r.stderr
    # No MiniLM vectors yet: words only (and no word matches), never the 768-d vectors.
    assert r.json()["results"] == []
    assert "reindex" in r.stderr
    r = me("reindex", "--json", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json()["embedded"] == len(HISTORY) and r.json()["dim"] == 384
    r = me("search", "--json", "-k", "2", "mountain walking holiday", env=vec_env)
    assert r.json()["results"][0]["external_id"] in ("t1", "t2")
    assert "reindex" not in r.stderr


def test_same_model_name_with_another_dimension(me, store, minilm, vec_env):
    """A table under the model's own name but of another dimension (a different file with
    the same name): never compared with, replaced on reindex."""
    assert me("import", "-", input=jsonl()).returncode == 0
    _random_vectors(store, f"{minilm.name}:{minilm.stat().st_size}", 768)
    r = me("search", "--json", "sourdough starter", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json()["results"][0]["external_id"] == "b1"
    r = me("--dry-run", "what is my sourdough starter called?", env=vec_env)
    assert r.returncode == 0, r.stderr
    r = me("reindex", "--json", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json()["embedded"] == len(HISTORY)
    (vm,) = [v for v in store.vec_models() if v["name"] == f"{minilm.name}:{minilm.stat().st_size}"]
    assert vm["dim"] == 384 and vm["vectors"] == len(HISTORY)
    r = me("search", "--json", "-k", "2", "mountain walking holiday", env=vec_env)
    assert r.json()["results"][0]["external_id"] in ("t1", "t2")


def test_reindex_embeds_every_message(me, store, vec_env):
    assert me("import", "-", input=jsonl()).returncode == 0  # ME_EMBEDDING_MODEL=none
    assert store.vec_models() == []
    r = me("reindex", "--json", env=vec_env)
    assert r.returncode == 0, r.stderr
    assert r.json()["embedded"] == len(HISTORY)
    (vm,) = store.vec_models()
    assert vm["vectors"] == store.counts()["messages"] == len(HISTORY)
    r = me("reindex", "--json", env=vec_env)  # nothing left to do
    assert r.json()["embedded"] == 0


def test_reindex_without_embedding_model_is_a_clear_error(me):
    r = me("reindex")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip()


# --- units --------------------------------------------------------------------------------------


def test_index_text_carries_the_previous_turn():
    from mecli.db import Message
    from mecli.memory import index_text

    prev = Message(1, 1, None, "user", "Where did you park the car?", "2024-01-01T00:00:00+00:00")
    assert index_text("Level 3, near the exit.", prev).startswith("Where did you park the car?")
    assert index_text("Hello", None) == "Hello"


def test_memory_block_is_quoted_and_dated(store):
    from mecli import memory

    cid = store.new_conversation()
    memory.store_message(store, cid, "user", "Line one\nline two", created_at="2024-02-03T04:05:06Z")
    recalled = memory.recall(store, None, "line", None, budget_tokens=200, k=3)
    block = memory.memory_block(recalled)
    assert block.startswith("Memory:")
    assert "> [2024-02-03] user: Line one" in block
    assert all(line.startswith(">") for line in block.splitlines()[2:] if line.strip())


def test_recall_stays_within_its_token_budget(store):
    from mecli import memory

    cid = store.new_conversation()
    for i in range(40):
        memory.store_message(store, cid, "user", f"note {i} about gardening " + "tomato " * 30)
    recalled = memory.recall(store, None, "gardening tomato", None, budget_tokens=200, k=10)
    used = sum(memory.approx_tokens(m.content) + 8 for _, group in recalled for m in group)
    assert recalled and used <= 200


def test_vec_blob_roundtrip():
    from mecli.db import vec_blob

    assert struct.unpack("3f", vec_blob([1.0, 0.5, -2.0])) == (1.0, 0.5, -2.0)


def _unit(rng: random.Random, dim: int = 16) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def _cos_distance(a, b) -> float:
    return 1 - sum(x * y for x, y in zip(a, b))


def test_vector_search_exact_and_coarse(store, monkeypatch):
    """Quantized table: exact up to EXACT_UP_TO vectors, coarse + exact re-ranking above."""
    from mecli.db import Store

    rng = random.Random(3)
    cid = store.new_conversation()
    vectors = {}
    for i in range(300):
        mid = store.add_message(cid, "user", f"message {i}")
        vectors[mid] = _unit(rng)
    model_id = store.vec_model("test-16.gguf", 16)
    store.add_vectors(model_id, list(vectors.items()))
    query = _unit(rng)
    exact = sorted(vectors, key=lambda m: (_cos_distance(vectors[m], query), m))[:10]
    got = store.vec_search(model_id, query, 10)
    assert [m for m, _ in got] == exact
    assert all(abs(d - _cos_distance(vectors[m], query)) < 1e-4 for m, d in got)
    monkeypatch.setattr(Store, "EXACT_UP_TO", 10)
    monkeypatch.setattr(Store, "COARSE_MIN", 100)
    got = store.vec_search(model_id, query, 10)
    assert len(got) == 10 and [d for _, d in got] == sorted(d for _, d in got)
    assert len({m for m, _ in got} & set(exact)) >= 5  # 16 bits: a rough first pass
    # Replacing a vector (vec0 has no INSERT OR REPLACE) works.
    store.add_vectors(model_id, [(exact[0], [-x for x in query])])
    assert exact[0] not in [m for m, _ in store.vec_search(model_id, query, 10)]


def test_vector_table_of_the_float_layout_still_works(store):
    """Vector tables made before the quantized layout (float, cosine) are still searched."""
    from mecli import memory

    cid = store.new_conversation()
    ids = [memory.store_message(store, cid, "user", f"turn {i}") for i in range(5)]
    store.conn.execute("INSERT INTO vec_models (name, dim, created_at) VALUES ('old.gguf', 4, 'x')")
    model_id = store.vec_model_id("old.gguf")
    store.conn.execute(f"CREATE VIRTUAL TABLE vec_{model_id} USING vec0("
                       "embedding float[4] distance_metric=cosine)")
    store.add_vectors(model_id, [(mid, [1.0, i, 0.0, 0.0]) for i, mid in enumerate(ids)])
    got = store.vec_search(model_id, [1.0, 0.0, 0.0, 0.0], 3)
    assert [m for m, _ in got] == ids[:3]
    assert store.vec_model_id("old.gguf", 4) == model_id and store.vec_model_id("old.gguf", 8) is None


def test_common_words_are_not_all_scored(store, monkeypatch):
    """Words in very many messages are left to the rarer ones; if all are that common,
    the newest matches come back (BM25 over everything is what makes search slow)."""
    from mecli import memory

    cid = store.new_conversation()
    for i in range(30):
        memory.store_message(store, cid, "user", f"the weather today is fine, note {i}")
    rare = memory.store_message(store, cid, "user", "the weather in Reykjavik is fine")
    monkeypatch.setattr(memory, "FTS_POSTINGS", 10)
    hits = memory.search(store, None, "weather in Reykjavik", k=5)
    assert [h.message.id for h in hits] == [rare]
    hits = memory.search(store, None, "weather fine", k=5)  # both words in 31 messages
    assert len(hits) == 5 and hits[0].message.id == rare  # the newest first


def test_search_ties_go_to_the_newer_message(store):
    from mecli import memory

    a, b = store.new_conversation(), store.new_conversation()
    old = memory.store_message(store, a, "user", "pelican", created_at="2023-01-01T00:00:00+00:00")
    new = memory.store_message(store, b, "user", "pelican", created_at="2024-01-01T00:00:00+00:00")
    assert [h.message.id for h in memory.search(store, None, "pelican")] == [new, old]
    assert [h.message.id for h in memory.search(store, None, "pelican", exclude_conversation=b)] == [old]


def test_recall_joins_an_answer_to_its_question(store):
    from mecli import memory

    cid = store.new_conversation()
    q = memory.store_message(store, cid, "user", "What is the wifi password at the cabin?")
    a = memory.store_message(store, cid, "assistant", "The cabin wifi password is blueberry42.")
    other = store.new_conversation()
    memory.store_message(store, other, "user", "Remind me to pack the cabin keys.")
    memory.store_message(store, other, "assistant", "Noted: cabin keys.")
    recalled = memory.recall(store, None, "cabin wifi password", None, budget_tokens=300, k=4)
    assert a in {m.id for m, _ in recalled}
    assert [m.id for m in recalled[0][1]] == [q, a]  # oldest excerpt first, question first
    block = memory.memory_block(recalled)
    assert block.count("blueberry42") == 1 and block.count("wifi password at the cabin") == 1
    assert block.index("What is the wifi") < block.index("blueberry42")
