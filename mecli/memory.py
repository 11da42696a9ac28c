"""Memory: indexing messages for words and meaning, hybrid search, recall.

Every message is indexed twice: FTS5 (BM25 over words) and a vec0 table of
sentence embeddings from the configured embedding model. Search fuses the two
rankings with weighted reciprocal rank fusion and breaks ties by recency.
Recall turns the best hits from other conversations into a quoted memory block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from mecli.db import Message, Store
from mecli.models import Models

# Reciprocal rank fusion: score = sum(weight / (RRF_K + rank)).
RRF_K = 60
FTS_WEIGHT = 1.0
VEC_WEIGHT = 1.0
CANDIDATES = 50  # how deep each ranking is read before fusing

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


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression: the query's words, quoted, OR-ed.

    Quoting every term means punctuation and FTS syntax in the query (`"`,
    `AND(`, `*`) are searched as words, never parsed as operators.
    """
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]
    if not words:
        words = re.findall(r"\w+", text.lower())
    unique = list(dict.fromkeys(words))[:64]
    if not unique:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in unique)


def index_text(content: str, previous: Message | None = None) -> str:
    """What a message is indexed as: its text, with the turn before it as context.

    A reply like "Yes, last Tuesday" is findable by what it answers.
    """
    if previous is None:
        return content
    return f"{previous.content}\n{content}"


def store_message(store: Store, conversation_id: int, role: str, content: str, **fields) -> int:
    """Store a message with its full-text index row (vectors come later: embed_pending)."""
    last = store.conversation_messages(conversation_id, limit=1)
    return store.add_message(conversation_id, role, content,
                             index_text=index_text(content, last[0] if last else None), **fields)


def _embedding_texts(store: Store, messages: list[Message]) -> list[str]:
    texts = []
    for m in messages:
        prev = store.neighbours(m, before=1)
        texts.append(index_text(m.content, prev[0] if prev else None))
    return texts


def embed_pending(store: Store, models: Models, limit: int | None = 256,
                  progress: Callable[[int], None] | None = None, batch: int = 32) -> int:
    """Embed messages that have no vector from the current embedding model."""
    embedder = models.embedder()
    if embedder is None:
        return 0
    model_id = store.vec_model(embedder.name, embedder.dim)
    done = 0
    while limit is None or done < limit:
        size = batch if limit is None else min(batch, limit - done)
        pending = store.messages_without_vectors(model_id, limit=size)
        if not pending:
            break
        vectors = embedder.embed(_embedding_texts(store, pending))
        store.add_vectors(model_id, [(m.id, v) for m, v in zip(pending, vectors)])
        done += len(pending)
        if progress:
            progress(len(pending))
    return done


def search(store: Store, models: Models | None, query: str, k: int = 10,
           exclude_conversation: int | None = None, use_vectors: bool = True,
           use_words: bool = True) -> list[Hit]:
    """Hybrid search over stored messages, best first."""
    depth = max(CANDIDATES, k * 3)
    fused: dict[int, Hit] = {}
    rankings: list[tuple[str, float, list[int]]] = []

    if use_words:
        match = fts_query(query)
        if match:
            rankings.append(("fts", FTS_WEIGHT, [mid for mid, _ in store.fts_search(match, depth)]))
    # No stored vectors yet: nothing to compare with, so don't load (or download) a model.
    if use_vectors and models is not None and query.strip() and store.has_vectors():
        embedder = models.embedder()
        if embedder is not None:
            model_id = store.vec_model_id(embedder.name)
            if model_id is not None:
                vector = embedder.embed([query])[0]
                rankings.append(("vec", VEC_WEIGHT,
                                 [mid for mid, _ in store.vec_search(model_id, vector, depth)]))

    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, weight, ids in rankings:
        for rank, mid in enumerate(ids, start=1):
            scores[mid] = scores.get(mid, 0.0) + weight / (RRF_K + rank)
            ranks.setdefault(mid, {})[name] = rank
    messages = store.messages_by_ids(list(scores))
    for mid, score in scores.items():
        m = messages.get(mid)
        if m is None or (exclude_conversation is not None and m.conversation_id == exclude_conversation):
            continue
        fused[mid] = Hit(m, score, ranks[mid].get("fts"), ranks[mid].get("vec"))
    # Best score first; among equal scores the newer message wins (two stable sorts).
    hits = sorted(fused.values(), key=lambda h: (h.message.created_at, h.message.id), reverse=True)
    hits.sort(key=lambda h: -h.score)
    return hits[:k]


def approx_tokens(text: str) -> int:
    """Token estimate for budgets when the model isn't loaded (about 4 chars a token)."""
    return len(text) // 4 + 1


def recall(store: Store, models: Models, query: str, conversation_id: int | None,
           budget_tokens: int, k: int) -> list[tuple[Message, list[Message]]]:
    """The most relevant past exchanges from other conversations, within a token budget.

    Each hit comes with the message before it, so an answer is shown with its
    question (and a question with its context).
    """
    hits = search(store, models, query, k=k * 2, exclude_conversation=conversation_id)
    chosen: list[tuple[Message, list[Message]]] = []
    seen: set[int] = set()
    used = 0
    for hit in hits:
        if hit.message.id in seen:
            continue
        context = [m for m in store.neighbours(hit.message, before=1) if m.id not in seen]
        group = context + [hit.message]
        cost = sum(approx_tokens(m.content) + 8 for m in group)
        if used + cost > budget_tokens:
            continue
        used += cost
        seen.update(m.id for m in group)
        chosen.append((hit.message, group))
        if len(chosen) >= k:
            break
    # Oldest first reads like a timeline.
    chosen.sort(key=lambda item: item[1][0].id)
    return chosen


def memory_block(recalled: list[tuple[Message, list[Message]]]) -> str:
    if not recalled:
        return ""
    lines = [
        "Memory: excerpts from earlier conversations with this user, quoted for reference. "
        "They may be outdated; use them only if relevant.",
    ]
    for _, group in recalled:
        lines.append("")
        for m in group:
            date = m.created_at[:10]
            text = m.content.strip().replace("\n", "\n>   ")
            lines.append(f"> [{date}] {m.role}: {text}")
    return "\n".join(lines)
