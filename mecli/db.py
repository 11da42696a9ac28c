"""The one module that owns the database: connection, schema, migrations, SQL.

One SQLite file (through `sqlean`, a sqlite3 that can load extensions, with
sqlite-vec loaded) holds conversations, messages, their full-text index and
vectors, feedback and the preference profile. Migrations are functions
appended to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mecli.environment import MeError

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    MIGRATIONS.append(fn)
    return fn


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- migrations -------------------------------------------------------------


@migration
def m001_conversations_and_messages(db) -> None:
    db.executescript(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            external_id TEXT UNIQUE,
            title TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            external_id TEXT,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            created_at TEXT NOT NULL,
            model TEXT,
            prompt_tokens INTEGER,
            cached_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_ms REAL,
            total_ms REAL,
            interrupted INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
        CREATE UNIQUE INDEX messages_by_external_id
            ON messages (conversation_id, external_id) WHERE external_id IS NOT NULL;
        CREATE INDEX messages_by_created_at ON messages (created_at);
        -- Contentless: the index holds terms, not a second copy of every message.
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, content='', contentless_delete=1, tokenize='porter unicode61'
        );
        INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);
        """
    )


@migration
def m002_vectors(db) -> None:
    # One vec0 table per embedding model (vec_<id>), so vectors of different
    # models or dimensions are never compared with each other.
    db.executescript(
        """
        CREATE TABLE vec_models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            dim INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        """
    )


@migration
def m003_feedback_and_rules(db) -> None:
    db.executescript(
        """
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            external_id TEXT UNIQUE,
            source TEXT NOT NULL CHECK (source IN ('explicit', 'implicit')),
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            message_id INTEGER REFERENCES messages(id),
            source_message_id INTEGER REFERENCES messages(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX feedback_by_message ON feedback (message_id);
        CREATE INDEX feedback_by_source_message ON feedback (source_message_id);
        CREATE TABLE rules (
            id INTEGER PRIMARY KEY,
            external_id TEXT UNIQUE,
            text TEXT NOT NULL,
            subject TEXT,
            status TEXT NOT NULL CHECK (status IN ('active', 'candidate', 'superseded')),
            pinned INTEGER NOT NULL DEFAULT 0,
            manual INTEGER NOT NULL DEFAULT 0,
            superseded_by INTEGER REFERENCES rules(id),
            created_at TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL
        );
        CREATE TABLE rule_sources (
            rule_id INTEGER NOT NULL REFERENCES rules(id),
            feedback_id INTEGER NOT NULL REFERENCES feedback(id),
            PRIMARY KEY (rule_id, feedback_id)
        );
        CREATE INDEX rule_sources_by_feedback ON rule_sources (feedback_id);
        """
    )


# --- connection ---------------------------------------------------------------


def connect(path: Path):
    """Open (creating with mode 0600) the database and bring its schema up to date."""
    import sqlean
    import sqlite_utils
    import sqlite_vec

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlean.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
        db = sqlite_utils.Database(conn)
        _migrate(db)
    except sqlean.DatabaseError as e:
        raise MeError(f"cannot open database {path}: {e}") from None
    except OSError as e:
        raise MeError(f"cannot create database {path}: {e.strerror or e}") from None
    return db


def _migrate(db) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with transaction(db):
            fn(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", [fn.__name__, now_iso()]
            )


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (connection is autocommit)."""

    def __init__(self, db):
        self.conn = db.conn

    def __enter__(self):
        if self.conn.in_transaction:
            self.nested = True
        else:
            self.nested = False
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.nested:
            return False
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False


# --- rows -------------------------------------------------------------------------


@dataclass
class Message:
    id: int
    conversation_id: int
    external_id: str | None
    role: str
    content: str
    created_at: str
    model: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    interrupted: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


MESSAGE_COLUMNS = (
    "id, conversation_id, external_id, role, content, created_at, model, prompt_tokens, "
    "cached_tokens, completion_tokens, ttft_ms, total_ms, interrupted"
)


def _messages(rows) -> list[Message]:
    return [Message(*row) for row in rows]


def vec_blob(vector: Iterable[float]) -> bytes:
    vector = list(vector)
    return struct.pack(f"{len(vector)}f", *vector)


class Store:
    """All reads and writes of `me`'s data. Nothing else writes SQL."""

    def __init__(self, path: Path | str):
        self.path = path = Path(path)
        self.db = connect(path)
        self.conn = self.db.conn

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA optimize")
        except Exception:
            pass
        self.conn.close()

    def q(self, sql: str, params=()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params=()):
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None

    def transaction(self):
        return transaction(self.db)

    # --- info ------------------------------------------------------------------

    def schema_version(self) -> int:
        return self.one("SELECT count(*) FROM _migrations")

    def counts(self) -> dict:
        return {
            "conversations": self.one("SELECT count(*) FROM conversations"),
            "messages": self.one("SELECT count(*) FROM messages"),
            "feedback": self.one("SELECT count(*) FROM feedback"),
            "rules": self.one("SELECT count(*) FROM rules"),
        }

    def vec_version(self) -> str:
        return self.one("SELECT vec_version()")

    # --- conversations -------------------------------------------------------

    def new_conversation(self, title: str | None = None, external_id: str | None = None,
                         created_at: str | None = None) -> int:
        ts = created_at or now_iso()
        cur = self.conn.execute(
            "INSERT INTO conversations (external_id, title, created_at, updated_at) VALUES (?,?,?,?)",
            (external_id, title, ts, ts),
        )
        return cur.lastrowid

    def conversation_by_external_id(self, external_id: str) -> int | None:
        return self.one("SELECT id FROM conversations WHERE external_id = ?", (external_id,))

    def conversation_exists(self, conversation_id: int) -> bool:
        return bool(self.one("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)))

    def latest_conversation(self) -> int | None:
        return self.one("SELECT id FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 1")

    def conversations(self, limit: int) -> list[dict]:
        rows = self.q(
            """
            SELECT c.id, c.external_id, c.title, c.created_at, c.updated_at,
                   (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
            FROM conversations c ORDER BY c.updated_at DESC, c.id DESC LIMIT ?
            """,
            (limit,),
        )
        keys = ("id", "external_id", "title", "created_at", "updated_at", "messages")
        return [dict(zip(keys, r)) for r in rows]

    def conversation(self, conversation_id: int) -> dict | None:
        row = self.conn.execute(
            "SELECT id, external_id, title, created_at, updated_at FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        if not row:
            return None
        keys = ("id", "external_id", "title", "created_at", "updated_at")
        return dict(zip(keys, row))

    # --- messages ---------------------------------------------------------------

    def add_message(self, conversation_id: int, role: str, content: str, *,
                    created_at: str | None = None, external_id: str | None = None,
                    model: str | None = None, index_text: str | None = None, **stats) -> int:
        """Insert a message and its full-text row in one transaction."""
        ts = created_at or now_iso()
        with self.transaction():
            cur = self.conn.execute(
                """INSERT INTO messages (conversation_id, external_id, role, content, created_at,
                   model, prompt_tokens, cached_tokens, completion_tokens, ttft_ms, total_ms,
                   interrupted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)""",
                (conversation_id, external_id, role, content, ts, model,
                 stats.get("prompt_tokens"), stats.get("cached_tokens"),
                 stats.get("completion_tokens"), stats.get("ttft_ms"), stats.get("total_ms"),
                 int(bool(stats.get("interrupted")))),
            )
            message_id = cur.lastrowid
            self.conn.execute(
                "INSERT INTO messages_fts (rowid, text) VALUES (?, ?)",
                (message_id, index_text if index_text is not None else content),
            )
            self.conn.execute(
                "UPDATE conversations SET updated_at = max(updated_at, ?), "
                "title = coalesce(title, ?) WHERE id = ?",
                (ts, content[:80].replace("\n", " ") if role == "user" else None, conversation_id),
            )
        return message_id

    def message(self, message_id: int) -> Message | None:
        rows = self.q(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return _messages(rows)[0] if rows else None

    def messages_by_ids(self, ids: list[int]) -> dict[int, Message]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.q(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ({marks})", ids)
        return {m.id: m for m in _messages(rows)}

    def conversation_messages(self, conversation_id: int, limit: int | None = None) -> list[Message]:
        """Messages of a conversation, oldest first (the last `limit` if given)."""
        if limit is None:
            rows = self.q(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
                          "ORDER BY id", (conversation_id,))
        else:
            rows = self.q(f"SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM messages "
                          "WHERE conversation_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                          (conversation_id, limit))
        return _messages(rows)

    def neighbours(self, message: Message, before: int = 1) -> list[Message]:
        rows = self.q(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
                      "AND id < ? ORDER BY id DESC LIMIT ?",
                      (message.conversation_id, message.id, before))
        return list(reversed(_messages(rows)))

    def latest_assistant_message(self) -> Message | None:
        rows = self.q(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE role = 'assistant' "
                      "ORDER BY id DESC LIMIT 1")
        return _messages(rows)[0] if rows else None

    def all_messages(self) -> Iterator[Message]:
        cur = self.conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id")
        for row in cur:
            yield Message(*row)

    # --- full-text search ------------------------------------------------------

    def fts_search(self, match: str, limit: int, newest_first: bool = False) -> list[tuple[int, float]]:
        """(message id, bm25 score: lower is better) for an FTS5 MATCH expression.

        BM25 scores every matching message; `newest_first` skips that (the score
        is 0.0) and reads the newest matches only.
        """
        if newest_first:
            return self.q("SELECT rowid, 0.0 FROM messages_fts WHERE messages_fts MATCH ? "
                          "ORDER BY rowid DESC LIMIT ?", (match, limit))
        return self.q(
            "SELECT rowid, bm25(messages_fts) FROM messages_fts WHERE messages_fts MATCH ? "
            "ORDER BY bm25(messages_fts), rowid DESC LIMIT ?",  # equal scores: the newer first
            (match, limit),
        )

    def fts_count(self, match: str, cap: int) -> int:
        """How many messages match, counting up to `cap` (cheap: no ranking)."""
        return self.one("SELECT count(*) FROM (SELECT rowid FROM messages_fts "
                        "WHERE messages_fts MATCH ? LIMIT ?)", (match, cap))

    # --- vectors --------------------------------------------------------------------

    def vec_model(self, name: str, dim: int) -> int:
        """The id of the vector table for this model, created on first use.

        A table under the same name with another dimension holds vectors of some
        other model (a file of the same name): they can't be compared with this
        model's, so that table goes and a new one is made.

        Layout: binary-quantized vectors (`bit[dim]`, for a fast coarse KNN) with
        the full float32 vector as an auxiliary column (exact cosine re-ranking).
        """
        row = self.conn.execute("SELECT id, dim FROM vec_models WHERE name = ?", (name,)).fetchone()
        if row:
            if row[1] == dim:
                return row[0]
            self.drop_vec_model(row[0])
        if dim % 8:
            column = f"embedding float[{int(dim)}] distance_metric=cosine"
        else:
            column = f"embedding bit[{int(dim)}], +vector blob"
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO vec_models (name, dim, created_at) VALUES (?,?,?)", (name, dim, now_iso()))
            model_id = cur.lastrowid
            self.conn.execute(f"CREATE VIRTUAL TABLE vec_{model_id} USING vec0({column})")
        return model_id

    def _vec_quantized(self, model_id: int) -> bool:
        """Whether a vector table has the quantized layout (tables made before it: float)."""
        cache = self.__dict__.setdefault("_vec_layouts", {})
        if model_id not in cache:
            sql = self.one("SELECT sql FROM sqlite_master WHERE name = ?", (f"vec_{int(model_id)}",))
            cache[model_id] = bool(sql and "+vector" in sql)
        return cache[model_id]

    def has_vectors(self) -> bool:
        return bool(self.one("SELECT 1 FROM vec_models LIMIT 1"))

    def vec_model_id(self, name: str, dim: int | None = None) -> int | None:
        """The vector table of this model (None if it has none, or one of another dimension)."""
        row = self.conn.execute("SELECT id, dim FROM vec_models WHERE name = ?", (name,)).fetchone()
        if row is None or (dim is not None and row[1] != dim):
            return None
        return row[0]

    def vec_models(self) -> list[dict]:
        out = []
        for model_id, name, dim in self.q("SELECT id, name, dim FROM vec_models ORDER BY id"):
            n = self.one(f"SELECT count(*) FROM vec_{model_id}")
            out.append({"id": model_id, "name": name, "dim": dim, "vectors": n})
        return out

    def drop_vec_model(self, model_id: int) -> None:
        with self.transaction():
            self.conn.execute(f"DROP TABLE IF EXISTS vec_{int(model_id)}")
            self.conn.execute("DELETE FROM vec_models WHERE id = ?", (model_id,))
        self.__dict__.get("_vec_layouts", {}).pop(model_id, None)

    def add_vectors(self, model_id: int, items: list[tuple[int, list[float]]]) -> None:
        table = f"vec_{int(model_id)}"
        if self._vec_quantized(model_id):
            sql = (f"INSERT INTO {table} (rowid, embedding, vector) "
                   "VALUES (?, vec_quantize_binary(?2), ?2)")
        else:
            sql = f"INSERT INTO {table} (rowid, embedding) VALUES (?, ?)"
        # vec0 has no INSERT OR REPLACE: a vector stored meanwhile (another process) is replaced.
        with self.transaction():
            self.conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(mid,) for mid, _ in items])
            self.conn.executemany(sql, [(mid, vec_blob(v)) for mid, v in items])

    def messages_without_vectors(self, model_id: int, limit: int | None = None) -> list[Message]:
        sql = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id NOT IN "
               f"(SELECT rowid FROM vec_{int(model_id)}) ORDER BY id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return _messages(self.q(sql))

    def count_without_vectors(self, model_id: int) -> int:
        return self.one(f"SELECT count(*) FROM messages WHERE id NOT IN "
                        f"(SELECT rowid FROM vec_{int(model_id)})")

    # Quantized tables: how many nearest by Hamming distance are re-ranked exactly. Up to
    # EXACT_UP_TO vectors, all of them (exact search); above, COARSE_FACTOR * limit (at least
    # COARSE_MIN): the coarse KNN's cost grows with k, and re-ranking a few hundred candidates
    # keeps nearly all of the exact top results (measured: benchmarks/search_latency.py).
    EXACT_UP_TO = 1024  # one vec0 chunk: the KNN with k = all of them stays cheap
    COARSE_FACTOR = 3
    COARSE_MIN = 150

    def vec_search(self, model_id: int, vector: list[float], limit: int) -> list[tuple[int, float]]:
        """(message id, cosine distance: lower is better), nearest first."""
        table = f"vec_{int(model_id)}"
        if not self._vec_quantized(model_id):
            return self.q(
                f"SELECT rowid, distance FROM {table} WHERE embedding MATCH ? AND k = ? "
                "ORDER BY distance",
                (vec_blob(vector), limit),
            )
        try:  # the row count of vec0's own rowid table: instant (count(*) on vec0 scans)
            n = self.one(f"SELECT count(*) FROM {table}_rowids")
        except Exception:
            n = None
        if n is not None and n <= self.EXACT_UP_TO:
            coarse = max(n, 1)
        else:
            coarse = min(4096, max(self.COARSE_MIN, self.COARSE_FACTOR * limit))
        return self.q(
            f"SELECT rowid, vec_distance_cosine(vector, ?1) AS d FROM "
            f"(SELECT rowid, vector FROM {table} WHERE embedding MATCH vec_quantize_binary(?1) "
            "AND k = ?2) ORDER BY d, rowid DESC LIMIT ?3",
            (vec_blob(vector), coarse, limit),
        )

    # --- feedback and rules -------------------------------------------------------

    def add_feedback(self, source: str, kind: str, text: str, message_id: int | None = None,
                     source_message_id: int | None = None, created_at: str | None = None,
                     external_id: str | None = None) -> int:
        cur = self.conn.execute(
            "INSERT INTO feedback (source, kind, text, message_id, source_message_id, created_at, "
            "external_id) VALUES (?,?,?,?,?,?,?)",
            (source, kind, text, message_id, source_message_id, created_at or now_iso(), external_id),
        )
        return cur.lastrowid

    FEEDBACK_COLUMNS = "id, source, kind, text, message_id, source_message_id, created_at, external_id"

    def _feedback_dicts(self, rows) -> list[dict]:
        keys = [k.strip() for k in self.FEEDBACK_COLUMNS.split(",")]
        return [dict(zip(keys, r)) for r in rows]

    def feedback(self, feedback_id: int) -> dict | None:
        rows = self._feedback_dicts(self.q(
            f"SELECT {self.FEEDBACK_COLUMNS} FROM feedback WHERE id = ?", (feedback_id,)))
        return rows[0] if rows else None

    def all_feedback(self) -> list[dict]:
        return self._feedback_dicts(self.q(f"SELECT {self.FEEDBACK_COLUMNS} FROM feedback ORDER BY id"))

    def feedback_for_rule(self, rule_id: int) -> list[dict]:
        return self._feedback_dicts(self.q(
            f"SELECT {self.FEEDBACK_COLUMNS} FROM feedback WHERE id IN "
            "(SELECT feedback_id FROM rule_sources WHERE rule_id = ?) ORDER BY id", (rule_id,)))

    def feedback_by_external_id(self, external_id: str) -> int | None:
        return self.one("SELECT id FROM feedback WHERE external_id = ?", (external_id,))

    def rule_by_external_id(self, external_id: str) -> int | None:
        return self.one("SELECT id FROM rules WHERE external_id = ?", (external_id,))

    RULE_COLUMNS = ("id, text, subject, status, pinned, manual, superseded_by, created_at, "
                    "first_seen, last_seen, external_id")

    def _rules(self, where: str = "1", params=()) -> list[dict]:
        keys = [k.strip() for k in self.RULE_COLUMNS.split(",")]
        rows = self.q(
            f"SELECT {self.RULE_COLUMNS}, "
            "(SELECT group_concat(feedback_id) FROM (SELECT feedback_id FROM rule_sources s "
            " WHERE s.rule_id = rules.id ORDER BY feedback_id)) "
            f"FROM rules WHERE {where} ORDER BY id", params)
        out = []
        for row in rows:
            rule = dict(zip(keys, row[:-1]))
            rule["sources"] = [int(x) for x in row[-1].split(",")] if row[-1] else []
            rule["pinned"] = bool(rule["pinned"])
            rule["manual"] = bool(rule["manual"])
            rule["support"] = len(rule["sources"]) + (1 if rule["manual"] else 0)
            out.append(rule)
        return out

    def rules(self, statuses: tuple[str, ...] = ("active", "candidate", "superseded")) -> list[dict]:
        marks = ",".join("?" * len(statuses))
        return self._rules(f"status IN ({marks})", statuses)

    def rule(self, rule_id: int) -> dict | None:
        found = self._rules("id = ?", (rule_id,))
        return found[0] if found else None

    def add_rule(self, text: str, status: str, subject: str | None = None, *, manual: bool = False,
                 pinned: bool = False, seen_at: str | None = None, created_at: str | None = None,
                 external_id: str | None = None) -> int:
        ts = seen_at or now_iso()
        cur = self.conn.execute(
            "INSERT INTO rules (text, subject, status, pinned, manual, created_at, first_seen, "
            "last_seen, external_id) VALUES (?,?,?,?,?,?,?,?,?)",
            (text, subject, status, int(pinned), int(manual), created_at or now_iso(), ts, ts,
             external_id),
        )
        return cur.lastrowid

    def update_rule(self, rule_id: int, **fields) -> None:
        allowed = {"text", "subject", "status", "pinned", "manual", "superseded_by", "first_seen",
                   "last_seen"}
        assert set(fields) <= allowed, fields
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE rules SET {sets} WHERE id = ?", (*fields.values(), rule_id))

    def link_rule_source(self, rule_id: int, feedback_id: int, seen_at: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO rule_sources (rule_id, feedback_id) VALUES (?, ?)",
                          (rule_id, feedback_id))
        self.conn.execute(
            "UPDATE rules SET first_seen = min(first_seen, ?), last_seen = max(last_seen, ?) "
            "WHERE id = ?", (seen_at, seen_at, rule_id))

    def delete_rule(self, rule_id: int, revive_superseded: bool = True) -> None:
        """Delete a rule. When forgetting (revive_superseded), the rule it had
        superseded comes back, as if the newer word was never said; a plain
        `profile rm` leaves the old one superseded (pin it to bring it back)."""
        with self.transaction():
            if revive_superseded:
                self.conn.execute("UPDATE rules SET status = 'active' "
                                  "WHERE superseded_by = ? AND status = 'superseded'", (rule_id,))
            # Every reference goes (a superseded rule re-activated by hand keeps one).
            self.conn.execute("UPDATE rules SET superseded_by = NULL WHERE superseded_by = ?",
                              (rule_id,))
            self.conn.execute("DELETE FROM rule_sources WHERE rule_id = ?", (rule_id,))
            self.conn.execute("DELETE FROM rules WHERE id = ?", (rule_id,))

    # --- forgetting ---------------------------------------------------------------

    def message_ids(self, *, conversation_id: int | None = None, before: str | None = None,
                    since: str | None = None, everything: bool = False) -> list[int]:
        if everything:
            return [r[0] for r in self.q("SELECT id FROM messages ORDER BY id")]
        where, params = [], []
        if conversation_id is not None:
            where.append("conversation_id = ?")
            params.append(conversation_id)
        if before is not None:
            where.append("created_at < ?")
            params.append(before)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if not where:
            return []
        return [r[0] for r in self.q(
            f"SELECT id FROM messages WHERE {' AND '.join(where)} ORDER BY id", params)]

    def forget_messages(self, ids: list[int],
                        index_text: Callable[[Message, Message | None], str] | None = None) -> dict:
        """Delete messages and everything derived from them, in one transaction.

        Feedback from or about them goes; rules left with no source (and not
        added by hand) go; a rule another rule superseded comes back if the
        superseding rule goes. Empty conversations go. A message that was
        indexed with a forgotten one as its context (the next one in its
        conversation) is indexed again without it (`index_text(message,
        previous)`; its vectors go, to be embedded again).
        """
        ids = sorted(set(ids))
        counts = {"messages": 0, "feedback": 0, "rules": 0, "conversations": 0, "reindexed": 0}
        if not ids:
            return counts
        with self.transaction():
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS forget_ids (id INTEGER PRIMARY KEY)")
            self.conn.execute("DELETE FROM forget_ids")
            self.conn.executemany("INSERT INTO forget_ids (id) VALUES (?)", [(i,) for i in ids])
            feedback_ids = [r[0] for r in self.q(
                "SELECT id FROM feedback WHERE message_id IN (SELECT id FROM forget_ids) "
                "OR source_message_id IN (SELECT id FROM forget_ids)")]
            counts.update(self._forget_feedback(feedback_ids))
            conversations = [r[0] for r in self.q(
                "SELECT DISTINCT conversation_id FROM messages WHERE id IN (SELECT id FROM forget_ids)")]
            followers = [r[0] for r in self.q(
                "SELECT m.id FROM messages m WHERE m.id NOT IN (SELECT id FROM forget_ids) "
                "AND m.conversation_id IN (SELECT conversation_id FROM messages "
                "  WHERE id IN (SELECT id FROM forget_ids)) "
                "AND (SELECT max(p.id) FROM messages p WHERE p.conversation_id = m.conversation_id "
                "     AND p.id < m.id) IN (SELECT id FROM forget_ids)")]
            vec_tables = [f"vec_{int(r[0])}" for r in self.q("SELECT id FROM vec_models")]
            self.conn.execute("DELETE FROM messages_fts WHERE rowid IN (SELECT id FROM forget_ids)")
            for table in vec_tables:
                self.conn.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT id FROM forget_ids)")
            counts["messages"] = self.conn.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM forget_ids)").rowcount
            for mid in followers:
                m = self.message(mid)
                previous = self.neighbours(m, before=1)
                text = (index_text(m, previous[0] if previous else None) if index_text
                        else m.content)
                self.conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (mid,))
                self.conn.execute("INSERT INTO messages_fts (rowid, text) VALUES (?, ?)", (mid, text))
                for table in vec_tables:
                    self.conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (mid,))
                counts["reindexed"] += 1
            for cid in conversations:
                first = self.one("SELECT content FROM messages WHERE conversation_id = ? "
                                 "AND role = 'user' ORDER BY id LIMIT 1", (cid,))
                if self.one("SELECT count(*) FROM messages WHERE conversation_id = ?", (cid,)) == 0:
                    self.conn.execute("DELETE FROM conversations WHERE id = ?", (cid,))
                    counts["conversations"] += 1
                else:  # the title was taken from a message: take it again
                    self.conn.execute("UPDATE conversations SET title = ? WHERE id = ?",
                                      (first[:80].replace("\n", " ") if first else None, cid))
            self.conn.execute("DELETE FROM forget_ids")
        return counts

    def forget_feedback(self, feedback_ids: list[int]) -> dict:
        with self.transaction():
            return self._forget_feedback(feedback_ids)

    def _forget_feedback(self, feedback_ids: list[int]) -> dict:
        if not feedback_ids:
            return {"feedback": 0, "rules": 0}
        marks = ",".join("?" * len(feedback_ids))
        touched = [r[0] for r in self.q(
            f"SELECT DISTINCT rule_id FROM rule_sources WHERE feedback_id IN ({marks})", feedback_ids)]
        self.conn.execute(f"DELETE FROM rule_sources WHERE feedback_id IN ({marks})", feedback_ids)
        n_feedback = self.conn.execute(
            f"DELETE FROM feedback WHERE id IN ({marks})", feedback_ids).rowcount
        n_rules = 0
        for rule_id in touched:
            left = self.one("SELECT count(*) FROM rule_sources WHERE rule_id = ?", (rule_id,))
            manual = self.one("SELECT manual FROM rules WHERE id = ?", (rule_id,))
            if left == 0 and not manual:
                self.delete_rule(rule_id)
                n_rules += 1
        return {"feedback": n_feedback, "rules": n_rules}

    def scrub(self) -> bool:
        """Make deleted text unrecoverable: merge the FTS index, drop the planner's
        sampled index keys (sqlite_stat4 keeps copies of rows, FTS terms
        included), checkpoint the WAL, and rebuild the file so no free page keeps
        old bytes. False if another connection kept the WAL from being emptied."""
        self.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")
        if self.one("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat4'"):
            self.conn.execute("DELETE FROM sqlite_stat4")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("VACUUM")
        busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not (busy and busy[0])
