"""Search latency of `me`'s memory at 10k and 100k stored messages: p50/p95 of `memory.search`.

    python benchmarks/search_latency.py [--sizes 10000 100000] [--queries 200]

Synthetic data: random sentences from a small English grammar (a few thousand distinct words,
frequent and rare ones) stored through `memory.store_message` (the FTS5 row with its context, as
for a chatted message), each with a random unit vector of 384 dimensions in the vec0 table of a
stand-in embedding model. The query embedding is NOT part of the figure: the benchmark gives
`Models` a stub embedder that returns a precomputed random unit vector, so what is timed is
`memory.search` itself (FTS5 BM25 + sqlite-vec KNN + fusion + fetching the messages).
Embedding one query with MiniLM adds a few milliseconds on top.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402  (a dependency of llama-cpp-python)

from mecli import memory  # noqa: E402
from mecli.config import Config, Paths  # noqa: E402
from mecli.db import Store  # noqa: E402
from mecli.models import Models  # noqa: E402

DIM = 384

NAMES = ("Anna Ben Carla Dmitri Elena Farid Grace Hiro Ines Jonas Kofi Lena Marco Nadia Omar Priya "
         "Quentin Rosa Sven Tara Umar Vera Wei Xenia Yusuf Zoe").split()
SUBJECTS = ("I we my sister my brother my manager the team our landlord the doctor my friend "
            "the kids my partner the neighbours the teacher the client").split(" ")
VERBS = ("bought fixed visited booked cancelled painted cooked read wrote planned started finished "
         "moved sold borrowed lost found repaired ordered tried recommended measured cleaned "
         "installed configured debugged deployed refactored reviewed tested upgraded").split()
OBJECTS = ("a bike a guitar the garden fence a new laptop the kitchen sink a birthday cake a novel "
           "the quarterly report a trip to Lisbon a concert ticket the car the dishwasher a tent "
           "the python script the database migration the docker image the nginx config a pull "
           "request the CI pipeline a sourdough loaf a watercolor painting the tax return a puppy "
           "a running plan a marathon the flight to Tokyo the rust compiler a vegetable patch "
           "the wedding speech a pottery class the home server the backup drive a chess opening "
           "the budget spreadsheet a yoga mat the heat pump the roof tiles the router firmware").split(" ")
PLACES = ("at home, at work, in Berlin, near the lake, at the library, in the office, downtown, at "
          "the market, on the train, at my parents' place, in the garage, at the cafe").split(", ")
TIMES = ("yesterday, last week, this morning, on Sunday, in March, two days ago, after lunch, "
         "over the weekend, last summer, on my birthday, before the holidays, tonight").split(", ")
TAILS = ("and it went well", "but it took forever", "because the old one broke",
         "and I want to do it again", "though it cost more than expected",
         "and everyone loved it", "so I need a reminder", "which was harder than it looked",
         "and I learned a lot", "but I am not sure it was worth it")
QUESTIONS = ("What did {s} do {t}?", "When did I fix {o}?", "Where did {n} buy {o}?",
             "How much did {o} cost?", "Who recommended {o}?", "Remind me about {o}",
             "what was the problem with {o} {t}", "Did {n} like {o}?",
             "error in {o} after the upgrade", "{n} {o}")


def rare_words(rng: random.Random, n: int = 3000) -> list[str]:
    """Made-up but word-like rare terms (names of things, jargon), for a long vocabulary tail."""
    syll = "ka lo mi ne ra to vi su pe da fo gu ri ze ban tor mel qui sta".split()
    return ["".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def sentence(rng: random.Random, rare: list[str]) -> str:
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(PLACES))
    if rng.random() < 0.6:
        parts.append(rng.choice(TIMES))
    if rng.random() < 0.5:
        parts.append(rng.choice(TAILS))
    text = " ".join(parts)
    if rng.random() < 0.4:
        text += f", with {rng.choice(NAMES)}"
    if rng.random() < 0.3:
        text += f" (the {rng.choice(rare)} one)"
    text = text[0].upper() + text[1:] + "."
    if rng.random() < 0.3:  # longer messages: a second sentence
        text += " " + sentence(rng, rare)
    return text


def question(rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(s=rng.choice(SUBJECTS), t=rng.choice(TIMES),
                                        o=rng.choice(OBJECTS), n=rng.choice(NAMES))


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class StubEmbedder:
    """Benchmark only: stands in for the embedding model so its time is not counted."""

    name = "synthetic-384.gguf"
    key = "synthetic-384.gguf:0"
    dim = DIM

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors
        self.i = 0

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for _ in texts:
            out.append(self.vectors[self.i % len(self.vectors)].tolist())
            self.i += 1
        return out


def fill(store: Store, n: int, seed: int = 1) -> float:
    """Store n messages (conversations of 2-40 turns) and their vectors; returns seconds."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    rare = rare_words(rng)
    model_id = store.vec_model(StubEmbedder.key, DIM)
    start = time.perf_counter()
    done = 0
    while done < n:
        with store.transaction():
            ids = []
            batch_end = min(n, done + 5000)
            while done < batch_end:
                cid = store.new_conversation(created_at=f"2024-{rng.randint(1, 12):02d}-"
                                                        f"{rng.randint(1, 28):02d}T10:00:00+00:00")
                for t in range(min(rng.randint(2, 40), batch_end - done)):
                    role = "user" if t % 2 == 0 else "assistant"
                    ids.append(memory.store_message(store, cid, role, sentence(rng, rare)))
                    done += 1
            vectors = unit_vectors(nprng, len(ids))
            store.add_vectors(model_id, list(zip(ids, vectors.tolist())))
    return time.perf_counter() - start


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def measure(store: Store, models: Models, queries: list[str], **mode) -> dict:
    for q in queries[:10]:  # warm the page cache and the statements
        memory.search(store, models, q, k=10, **mode)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        memory.search(store, models, q, k=10, **mode)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50": statistics.median(times), "p95": percentile(times, 95), "max": max(times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None,
                    help="build the databases in this folder and keep them (reused if present)")
    args = ap.parse_args(argv)

    rng = random.Random(7)
    queries = [question(rng) for _ in range(args.queries)]
    for i, odd in enumerate(("\"", "AND(", "*")):  # bad input is part of the mix
        queries[i * len(queries) // 3] = odd
    stub = StubEmbedder(unit_vectors(np.random.default_rng(7), args.queries))
    rows = []
    for size in args.sizes:
        folder = args.keep or Path(tempfile.mkdtemp(prefix="me-latency-"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"me-{size}.db"
        fresh = not path.exists()
        store = Store(path)
        fill_s = fill(store, size) if fresh else None
        if fresh:
            store.conn.execute("PRAGMA optimize")
        models = Models(Config(), Paths(folder, folder))
        models._embedder = stub  # benchmark only: no query embedding in the figure
        n = store.counts()["messages"]
        for label, mode in (("hybrid", {}), ("BM25 only", {"use_vectors": False}),
                            ("vectors only", {"use_words": False})):
            r = measure(store, models, queries, **mode)
            rows.append((n, label, r))
        store.close()
        if fill_s is not None:
            print(f"{n:,} messages stored and indexed in {fill_s:.0f} s", file=sys.stderr)
        if args.keep is None:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()

    print(f"## `memory.search` latency, k=10, {args.queries} queries, query embedding excluded\n")
    print("| messages | ranking | p50 ms | p95 ms | max ms |")
    print("|---:|---|---:|---:|---:|")
    for n, label, r in rows:
        print(f"| {n:,} | {label} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} |")
    print(f"\nSettings: candidates per ranking {memory.CANDIDATES}; BM25 scores at most "
          f"{memory.FTS_POSTINGS} matching messages (rarest words first); vectors: {DIM} "
          f"dimensions, random unit vectors, binary-quantized KNN (exact up to "
          f"{Store.EXACT_UP_TO} vectors, else {Store.COARSE_FACTOR} x depth, at least "
          f"{Store.COARSE_MIN}) re-ranked by exact cosine. The query vector is precomputed "
          "(a stub embedder, in this benchmark only): embedding it with MiniLM adds a few ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
