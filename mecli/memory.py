"""Memory: indexing messages for words and meaning, hybrid search, recall.

Every message is indexed twice: FTS5 (BM25 over words) and a vec0 table of
sentence embeddings from the configured embedding model. Search fuses the two
rankings with weighted reciprocal rank fusion and breaks ties by recency.
Recall turns the best hits from other conversations into a quoted memory block.

What a message is indexed as (measured on LoCoMo part 1 with MiniLM, recall_any@10;
benchmarks/locomo_recall.py):
- words (FTS5): the turn before it, then its own text. A reply ("Yes, last
  Tuesday, at the lake") is found by what it answers: BM25 0.69 -> 0.78.
- meaning (vectors): its own text only. A vector of the turn with the one before
  mixed in is worse (0.55 -> 0.52); with the next one, no better in the fusion.
- not the date: "[8 May 2023]" in the indexed text gained about 0.02, but then
  a search (or `me forget`) for a month or a year would match every message of
  that month whatever it says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from mecli.db import Message, Store
from mecli.environment import MeError
from mecli.models import Models

# Reciprocal rank fusion: score = sum(weight / (RRF_K + rank)). Words weigh more than
# meaning: with MiniLM, vectors alone find less than BM25 over turns with their
# context, and an equal say drags the fusion below BM25 at k <= 10. A small RRF_K lets
# the top of each ranking count. Measured on LoCoMo (see the benchmark).
RRF_K = 20
FTS_WEIGHT = 1.0
VEC_WEIGHT = 0.5
CANDIDATES = 50  # how deep each ranking is read before fusing
FTS_POSTINGS = 8000  # at most this many matching messages are scored by BM25 per search
MAX_QUERY_WORDS = 32

STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i if in into is "
    "it its me my of on or our she so that the their them they this to was we were what when where "
    "which who whom why will with would you your".split()
)


@dataclass
class Hit:
    message: Message
    score: float
    fts_rank: int | None = None
    vec_rank: int | None = None

    def as_dict(self) -> dict:
        m = self.message
        return {
            "id": m.id, "external_id": m.external_id, "conversation_id": m.conversation_id,
            "role": m.role, "content": m.content, "created_at": m.created_at,
            "score": round(self.score, 6),
        }


def query_words(text: str, limit: int = MAX_QUERY_WORDS) -> list[str]:
    """The words a query is matched by: lowercased, stopwords out (unless that's all)."""
    words = re.findall(r"\w+", text.lower())
    content = [w for w in words if w not in STOPWORDS]
    return list(dict.fromkeys(content or words))[:limit]


def fts_match(words: list[str], op: str = "OR") -> str:
    """A safe FTS5 MATCH expression: every word quoted, so punctuation and FTS
    syntax in a query (`"`, `AND(`, `*`) are searched as words, never parsed."""
    return f" {op} ".join('"' + w.replace('"', '""') + '"' for w in words)


def fuse(rankings: list[tuple[str, float, list[int]]]) -> tuple[dict[int, float], dict[int, dict[str, int]]]:
    """Weighted reciprocal rank fusion of (name, weight, ids best first) rankings:
    each id's score, and its rank in each ranking by name."""
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, weight, ids in rankings:
        for rank, mid in enumerate(ids, start=1):
            scores[mid] = scores.get(mid, 0.0) + weight / (RRF_K + rank)
            ranks.setdefault(mid, {})[name] = rank
    return scores, ranks


def word_ranking(store: Store, query: str, depth: int) -> list[int]:
    """Message ids by BM25 over the query's words, best first.

    BM25 has to score every message that has any of the words, which is what
    makes a search slow in a large history. So the words are taken rarest first
    while the messages they match stay within FTS_POSTINGS (counting is cheap);
    a word in more messages than that weighs next to nothing in BM25 anyway. If
    even the rarest word is that common, its newest matches are returned.
    """
    words = query_words(query)
    if not words:
        return []
    counts = {w: store.fts_count(fts_match([w]), FTS_POSTINGS + 1) for w in words}
    present = sorted((w for w in words if counts[w]), key=lambda w: counts[w])
    if not present:
        return []
    chosen, total = [], 0
    for w in present:
        if total + counts[w] > FTS_POSTINGS:
            break
        chosen.append(w)
        total += counts[w]
    if not chosen:
        return [mid for mid, _ in store.fts_search(fts_match(present[:1]), depth, newest_first=True)]
    return [mid for mid, _ in store.fts_search(fts_match(chosen), depth)]


def index_text(content: str | Message, previous: Message | None = None) -> str:
    """What a message is indexed as for words: its text, with the turn before it as context.

    A reply like "Yes, last Tuesday" is findable by what it answers. (Used for
    chatted and imported messages alike; `content` may be the Message itself.)
    """
    if isinstance(content, Message):
        content = content.content
    if previous is None or not previous.content.strip():
        return content
    return f"{previous.content}\n{content}"


def embedding_text(message: Message) -> str:
    """What a message is embedded as: its own text (see the module docstring)."""
    return message.content


def store_message(store: Store, conversation_id: int, role: str, content: str, **fields) -> int:
    """Store a message with its full-text index row (vectors come later: embed_pending)."""
    last = store.conversation_messages(conversation_id, limit=1)
    return store.add_message(conversation_id, role, content,
                             index_text=index_text(content, last[0] if last else None), **fields)


def embed_pending(store: Store, models: Models, limit: int | None = 256,
                  progress: Callable[[int], None] | None = None, batch: int = 32) -> int:
    """Embed messages that have no vector from the current embedding model.

    The vectors go to that model's own table (by name and dimension): vectors of
    another model are never compared with its own.
    """
    embedder = models.embedder()
    if embedder is None:
        return 0
    model_id = store.vec_model(embedder.key, embedder.dim)
    done = 0
    while limit is None or done < limit:
        size = batch if limit is None else min(batch, limit - done)
        pending = store.messages_without_vectors(model_id, limit=size)
        if not pending:
            break
        try:
            vectors = embedder.embed([embedding_text(m) for m in pending])
        except (ValueError, RuntimeError, OSError) as e:
            raise MeError(f"embedding with {embedder.name} failed: {e}") from None
        store.add_vectors(model_id, [(m.id, v) for m, v in zip(pending, vectors)])
        done += len(pending)
        if progress:
            progress(len(pending))
    return done


def _notice(models: Models, text: str) -> None:
    if text not in models.notices:
        models.notices.append(text)


def _query_vector_ranking(store: Store, models: Models, query: str,
                          depth: int) -> list[int] | None:
    """Message ids nearest in meaning to the query, or None (words only)."""
    # No stored vectors at all: nothing to compare with, so don't load (or download) a model.
    if not store.has_vectors():
        return None
    embedder = models.embedder()  # None when unavailable: Models says so once
    if embedder is None:
        return None
    model_id = store.vec_model_id(embedder.key, embedder.dim)
    if model_id is None:
        _notice(models, f"the stored vectors are from another embedding model than "
                        f"{embedder.name}: recall uses words only until `me reindex`")
        return None
    try:
        vector = embedder.embed([query])[0]
        return [mid for mid, _ in store.vec_search(model_id, vector, depth)]
    except Exception as e:  # recall must never take the answer down with it
        reason = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        _notice(models, f"vector search failed ({reason}); recall uses words only")
        return None


def search(store: Store, models: Models | None, query: str, k: int = 10,
           exclude_conversation: int | None = None, use_vectors: bool = True,
           use_words: bool = True) -> list[Hit]:
    """Hybrid search over stored messages, best first.

    Words (BM25 over each message with the turn before it) and meaning (cosine
    over the current embedding model's vectors) are fused by weighted reciprocal
    rank; equal scores go to the newer message. Without an embedding model (none
    configured, offline, failed to load) or without vectors of the current model,
    words only.
    """
    depth = max(CANDIDATES, k * 3)
    rankings: list[tuple[str, float, list[int]]] = []

    if use_words:
        ids = word_ranking(store, query, depth)
        if ids:
            rankings.append(("fts", FTS_WEIGHT, ids))
    if use_vectors and models is not None and query.strip():
        ids = _query_vector_ranking(store, models, query, depth)
        if ids is not None:
            rankings.append(("vec", VEC_WEIGHT, ids))

    scores, ranks = fuse(rankings)
    messages = store.messages_by_ids(list(scores))
    fused: list[Hit] = []
    for mid, score in scores.items():
        m = messages.get(mid)
        if m is None or (exclude_conversation is not None and m.conversation_id == exclude_conversation):
            continue
        fused.append(Hit(m, score, ranks[mid].get("fts"), ranks[mid].get("vec")))
    # Best score first; among equal scores the newer message wins (two stable sorts).
    fused.sort(key=lambda h: (h.message.created_at, h.message.id), reverse=True)
    fused.sort(key=lambda h: -h.score)
    return fused[:k]


def approx_tokens(text: str) -> int:
    """Token estimate for budgets when the model isn't loaded (about 4 chars a token)."""
    return len(text) // 4 + 1


def recall(store: Store, models: Models | None, query: str, conversation_id: int | None,
           budget_tokens: int, k: int) -> list[tuple[Message, list[Message]]]:
    """The most relevant past exchanges from other conversations, within a token budget.

    Each hit comes with the message before it, so an answer is shown with its
    question (and a question with its context); a hit that continues an excerpt
    already chosen joins it. Returns (hit, excerpt) pairs, excerpts oldest first;
    hits of one excerpt share the same list.
    """
    hits = search(store, models, query, k=k * 2, exclude_conversation=conversation_id)
    chosen: list[tuple[Message, list[Message]]] = []
    ends: dict[int, list[Message]] = {}  # last message id -> its excerpt
    seen: set[int] = set()
    used = 0
    for hit in hits:
        m = hit.message
        if m.id in seen:
            continue
        before = store.neighbours(m, before=1)
        previous = before[0] if before else None
        group = ends.get(previous.id) if previous is not None else None
        add = [m] if group is not None or previous is None or previous.id in seen else [previous, m]
        cost = sum(approx_tokens(x.content) + 8 for x in add)
        if used + cost > budget_tokens:
            continue
        used += cost
        if group is None:
            group = []
        else:
            del ends[previous.id]
        group.extend(add)
        ends[m.id] = group
        seen.update(x.id for x in add)
        chosen.append((m, group))
        if len(chosen) >= k:
            break
    # Oldest first reads like a timeline.
    chosen.sort(key=lambda item: (item[1][0].created_at, item[1][0].id))
    return chosen


def memory_block(recalled: list[tuple[Message, list[Message]]]) -> str:
    """The recalled excerpts as a quoted, dated block for the system prompt."""
    if not recalled:
        return ""
    lines = [
        "Memory: excerpts from earlier conversations with this user, quoted for reference. "
        "They may be outdated; use them only if relevant.",
    ]
    shown: set[int] = set()
    for _, group in recalled:
        if id(group) in shown:
            continue
        shown.add(id(group))
        lines.append("")
        for m in group:
            date = m.created_at[:10]
            text = m.content.strip().replace("\n", "\n>   ")
            lines.append(f"> [{date}] {m.role}: {text}")
    return "\n".join(lines)
