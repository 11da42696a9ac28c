"""LoCoMo retrieval benchmark for `me`'s memory: recall_any@k of BM25, vectors and the hybrid.

    python benchmarks/locomo_recall.py [--data ../shared/data/locomo/locomo10-part1.json]
        [--embedding-model ../shared/models/all-MiniLM-L6-v2.Q8_0.gguf] [--limit N]

For each LoCoMo conversation: a fresh temporary data directory; every dialog turn becomes a
message imported through the code path of `me import` (`transfer.import_records` on a `Store`,
then `memory.embed_pending`), one `me` conversation per LoCoMo session, with the turn's
`dia_id` as the message `id` (kept as `external_id`) and the session's date as `created_at`.
The import format has roles user/assistant only, so the first speaker is `user`, the second
`assistant`, and the speaker's name goes into the content as "Name: text" (a shared photo as
"[shares a photo: caption]"), as a user's own transcript would read. Each question of
categories 1-4 is then asked through the code path of `me search` (`memory.search`), and a
hit at k is counted when any evidence `dia_id` is among the top k results (recall_any@k).

Three rankings in the same run: BM25 alone (`use_vectors=False`), vectors alone
(`use_words=False`), the hybrid (the default `me search`); vectors with the shared MiniLM GGUF
and, when it is available (downloaded before, or downloadable now), the default embedder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mecli import memory, transfer  # noqa: E402
from mecli.config import DEFAULT_EMBEDDING_MODEL, Config, Paths  # noqa: E402
from mecli.db import Store  # noqa: E402
from mecli.environment import MeError  # noqa: E402
from mecli.models import Models, resolve_model  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "locomo" / "locomo10-part1.json"
MINILM = REPO.parent / "shared" / "models" / "all-MiniLM-L6-v2.Q8_0.gguf"
KS = (1, 5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


# --- the data, as `me import` lines ------------------------------------------------------


def session_date(text: str) -> str:
    """"1:56 pm on 8 May, 2023" -> "2023-05-08T13:56:00"."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").isoformat()


def import_lines(sample: dict) -> list[str]:
    conv = sample["conversation"]
    roles = {conv["speaker_a"]: "user", conv["speaker_b"]: "assistant"}
    lines = []
    n = 1
    while f"session_{n}" in conv:
        created_at = session_date(conv[f"session_{n}_date_time"])
        for turn in conv[f"session_{n}"]:
            content = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                content += f" [shares a photo: {turn['blip_caption']}]"
            lines.append(json.dumps({
                "conversation": f"{sample['sample_id']} session {n}",
                "role": roles[turn["speaker"]], "content": content,
                "created_at": created_at, "id": turn["dia_id"],
            }))
        n += 1
    return lines


def clean_evidence(evidence: list[str]) -> set[str]:
    out = set()
    for entry in evidence:
        for e in re.split(r"[;\s]+", entry.strip()):
            if e:
                out.add(re.sub(r"^D:?(\d+):0*(\d+)$", r"D\1:\2", e))
    return out


def questions(sample: dict, dia_ids: set[str]) -> list[tuple[str, int, set[str]]]:
    out = []
    for qa in sample["qa"]:
        if qa.get("category") not in CATEGORIES:
            continue
        evidence = clean_evidence(qa.get("evidence") or []) & dia_ids
        if evidence:
            out.append((qa["question"], qa["category"], evidence))
    return out


# --- the run ---------------------------------------------------------------------------------


def build(sample: dict, models_list: list[Models], folder: Path) -> Store:
    """A fresh database holding the conversation, imported and embedded like `me import`."""
    store = Store(folder / "me.db")
    report = transfer.import_records(store, import_lines(sample), skip_bad=False,
                                     min_support=Config().rule_min_support)
    assert report.messages > 0 and not report.skipped, report.as_dict()
    for models in models_list:
        memory.embed_pending(store, models, limit=None)
    return store


def first_hit(store: Store, models: Models | None, question: str, evidence: set[str],
              **mode) -> int | None:
    """Rank (1-based) of the first evidence turn in the top max(KS) results, or None."""
    hits = memory.search(store, models, question, k=max(KS), **mode)
    for rank, hit in enumerate(hits, start=1):
        if hit.message.external_id in evidence:
            return rank
    return None


@contextmanager
def naive_fusion():
    """The plain reciprocal rank fusion (k=60, words and vectors weighted equally), for comparison."""
    saved = memory.RRF_K, memory.FTS_WEIGHT, memory.VEC_WEIGHT
    memory.RRF_K, memory.FTS_WEIGHT, memory.VEC_WEIGHT = 60, 1.0, 1.0
    try:
        yield
    finally:
        memory.RRF_K, memory.FTS_WEIGHT, memory.VEC_WEIGHT = saved


def recall_table(ranks: dict[str, list[tuple[int, int | None]]]) -> dict:
    """{method: {"all"|category: {"n": n, k: recall_any@k}}}."""
    out = {}
    for method, items in ranks.items():
        groups = defaultdict(list)
        for category, rank in items:
            groups["all"].append(rank)
            groups[category].append(rank)
        out[method] = {
            g: {"n": len(rs), **{k: sum(1 for r in rs if r is not None and r <= k) / len(rs)
                                 for k in KS}}
            for g, rs in groups.items()
        }
    return out


def markdown(table: dict, group="all") -> str:
    lines = ["| method | n | " + " | ".join(f"@{k}" for k in KS) + " |",
             "|---|---:|" + "---:|" * len(KS)]
    for method, groups in table.items():
        if group in groups:
            row = groups[group]
            lines.append(f"| {method} | {row['n']} | "
                         + " | ".join(f"{row[k]:.2f}" for k in KS) + " |")
    return "\n".join(lines)


def default_embedder(offline: bool) -> tuple[Path | None, str]:
    """The default embedding model's file if it is here or can be downloaded now."""
    paths = Paths.resolve()
    try:
        return resolve_model(DEFAULT_EMBEDDING_MODEL, paths, offline=offline), ""
    except MeError as e:
        return None, e.message


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--embedding-model", type=Path, default=MINILM,
                    help="a sentence-embedding GGUF (default: the shared MiniLM)")
    ap.add_argument("--limit", type=int, default=None,
                    help="only the first N conversations (quick runs)")
    ap.add_argument("--questions", type=int, default=None,
                    help="at most N questions per conversation (quick runs)")
    ap.add_argument("--no-default-embedder", action="store_true",
                    help="don't try the default embedder (bge-small via hf:)")
    ap.add_argument("--offline", action="store_true",
                    help="never download the default embedder (also: ME_OFFLINE=1)")
    ap.add_argument("--no-naive", dest="naive", action="store_false",
                    help="leave out the naive fusion row (RRF k=60, equal weights)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: its choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    import os

    samples = json.loads(args.data.read_text(encoding="utf-8"))
    if args.limit:
        samples = samples[: args.limit]

    embedders: list[tuple[str, Path]] = [("MiniLM-L6-v2 Q8_0", args.embedding_model)]
    notes = []
    if not args.no_default_embedder:
        offline = args.offline or os.environ.get("ME_OFFLINE", "") not in ("", "0")
        path, reason = default_embedder(offline)
        if path is None:
            notes.append(f"default embedder {DEFAULT_EMBEDDING_MODEL} is not available offline "
                         f"({reason}): not measured")
        else:
            embedders.append(("bge-small-en-v1.5 q8_0 (default)", path))

    scratch = Path(tempfile.mkdtemp(prefix="me-locomo-"))
    models_list = []
    for label, path in embedders:
        config = Config(embedding_model=str(path), threads=args.threads)
        models = Models(config, Paths(scratch, scratch))
        if models.embedder() is None:
            raise SystemExit(f"cannot load {path}: {'; '.join(models.notices)}")
        models_list.append((label, models))

    ranks: dict[str, list] = defaultdict(list)
    timings = defaultdict(float)
    n_turns = 0
    for sample in samples:
        with tempfile.TemporaryDirectory(prefix="me-locomo-") as tmp:
            t0 = time.perf_counter()
            store = build(sample, [m for _, m in models_list], Path(tmp))
            timings["import + embed"] += time.perf_counter() - t0
            dia_ids = {m.external_id for m in store.all_messages()}
            n_turns += len(dia_ids)
            qs = questions(sample, dia_ids)[: args.questions]
            t0 = time.perf_counter()
            for q, category, evidence in qs:
                ranks["BM25 (FTS5)"].append(
                    (category, first_hit(store, None, q, evidence, use_vectors=False)))
            timings["search"] += time.perf_counter() - t0
            for label, models in models_list:
                t0 = time.perf_counter()
                for q, category, evidence in qs:
                    ranks[f"vectors: {label}"].append(
                        (category, first_hit(store, models, q, evidence, use_words=False)))
                    ranks[f"hybrid: {label}"].append(
                        (category, first_hit(store, models, q, evidence)))
                    if args.naive:
                        with naive_fusion():
                            ranks[f"hybrid, naive RRF (k=60, equal weights): {label}"].append(
                                (category, first_hit(store, models, q, evidence)))
                timings["search"] += time.perf_counter() - t0
            store.close()
            print(f"{sample['sample_id']}: {len(dia_ids)} turns, {len(qs)} questions",
                  file=sys.stderr)

    table = recall_table(ranks)
    n_q = len(ranks["BM25 (FTS5)"])
    print(f"## LoCoMo retrieval: {len(samples)} conversations ({args.data.name}), {n_turns} turns, "
          f"{n_q} questions of categories 1-4\n")
    print("Turns imported with `me import`'s code path as \"Speaker: text\" (the import format "
          "has roles only: speaker A is role user, B assistant; a shared photo as \"[shares a "
          "photo: caption]\"; one `me` conversation per session, dated), queried with "
          "`me search`'s code path. recall_any@k: any evidence turn in the top k.\n")
    print("### Overall\n")
    print(markdown(table))
    for category, name in CATEGORIES.items():
        print(f"\n### Category {category} ({name})\n")
        print(markdown(table, category))
    print()
    for note in notes:
        print(f"Note: {note}.")
    print(f"Settings: RRF k={memory.RRF_K}, weights words {memory.FTS_WEIGHT} / vectors "
          f"{memory.VEC_WEIGHT}, candidates {memory.CANDIDATES}; indexed for words: the turn "
          "before and the turn; for meaning: the turn.")
    print(f"Time: import + embed {timings['import + embed']:.0f} s, "
          f"search {timings['search']:.0f} s ({n_q * (1 + (3 if args.naive else 2) * len(models_list))} "
          "searches).")
    if args.json:
        args.json.write_text(json.dumps({"table": {m: {str(g): v for g, v in t.items()}
                                                   for m, t in table.items()},
                                         "notes": notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
