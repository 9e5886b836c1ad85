"""Create the ConvoAI schema and fill it with seeded, realistic data at COPY speed.

Scale 1 is about 100 MB on disk (vectors and their HNSW indexes dominate). Rows are generated in
batches and streamed with COPY (binary for tables with vectors); secondary and vector indexes are
built after the load, which is how a restore or bulk import is fastest too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib import resources
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pgdr.core.connect import connect
from pgdr.core.errors import ConfigError, RuntimeFailure

DIMENSION = 1536
BATCH = 1000
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
TABLES = (
    "users",
    "chatbots",
    "subscriptions",
    "conversations",
    "messages",
    "embeddings",
    "knowledge_base",
)
PER_SCALE = {
    "users": 200,
    "chatbots": 300,
    "conversations": 3000,
    "messages": 15000,
    "embeddings": 4000,
    "knowledge_base": 1000,
}
STATUSES = ("ready", "ready", "ready", "ready", "ready", "ready", "pending", "scraping", "failed")
PLANS = ("free", "starter", "pro", "enterprise")
SUB_STATUSES = ("active", "active", "active", "trialing", "past_due", "canceled")
WORDS = [
    "account",
    "billing",
    "chatbot",
    "widget",
    "embed",
    "website",
    "crawl",
    "page",
    "pricing",
    "plan",
    "upgrade",
    "refund",
    "invoice",
    "support",
    "answer",
    "question",
    "customer",
    "visitor",
    "session",
    "token",
    "api",
    "key",
    "model",
    "response",
    "latency",
    "integration",
    "webhook",
    "shopify",
    "wordpress",
    "install",
    "script",
    "domain",
    "verify",
    "email",
    "password",
    "reset",
    "team",
    "member",
    "role",
    "admin",
    "settings",
    "language",
    "tone",
    "greeting",
    "fallback",
    "handoff",
    "human",
    "agent",
    "ticket",
    "knowledge",
    "base",
    "article",
    "faq",
    "document",
    "upload",
    "pdf",
    "sitemap",
    "schedule",
    "sync",
    "status",
    "ready",
    "failed",
    "limit",
    "quota",
    "message",
    "conversation",
    "history",
    "export",
    "privacy",
    "gdpr",
    "data",
    "retention",
    "delete",
    "secure",
    "encryption",
    "backup",
    "restore",
    "uptime",
    "monitor",
    "alert",
    "dashboard",
    "analytics",
    "report",
    "trial",
    "discount",
]

ProgressCallback = Callable[[str, int], None]


class VectorType(StrEnum):
    """How vector columns are stored: pgvector, or plain arrays on servers without it."""

    VECTOR = "vector"
    ARRAY = "real[]"


@dataclass
class SampleReport:
    scale: float
    seed: int
    vector_type: str
    rows: dict[str, int]
    load_seconds: float
    index_seconds: float
    database_bytes: int
    tables: list[str] = field(default_factory=lambda: list(TABLES))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scale_counts(scale: float) -> dict[str, int]:
    if scale <= 0:
        raise ConfigError(f"--scale must be greater than 0 (got {scale}).")
    counts = {name: max(1, round(n * scale)) for name, n in PER_SCALE.items()}
    counts["subscriptions"] = counts["users"]
    return counts


class _Generator:
    """Deterministic rows; each table's generator depends only on the seed and the counts."""

    def __init__(self, seed: int, counts: dict[str, int]) -> None:
        self.rng = np.random.default_rng(seed)
        self.counts = counts
        self.words = np.array(WORDS)
        self.user_ids = self._uuids(counts["users"])
        self.user_created = self._times(counts["users"], 0, 200)
        self.chatbot_ids = self._uuids(counts["chatbots"])
        self.chatbot_owner = self.rng.integers(0, counts["users"], counts["chatbots"])
        self.chatbot_created = self.user_created[self.chatbot_owner] + self._days(
            counts["chatbots"], 30
        )
        self.conversation_ids = self._uuids(counts["conversations"])
        self.conversation_bot = self.rng.integers(0, counts["chatbots"], counts["conversations"])

    def _uuids(self, n: int) -> list[uuid.UUID]:
        raw = self.rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
        return [uuid.UUID(int=(int(a) << 64 | int(b)), version=4) for a, b in raw]

    def _days(self, n: int, span: float) -> np.ndarray[Any, np.dtype[np.float64]]:
        return self.rng.uniform(0, span, n)

    def _times(self, n: int, start: float, span: float) -> np.ndarray[Any, np.dtype[np.float64]]:
        return start + self._days(n, span)

    @staticmethod
    def stamp(days: float) -> datetime:
        return EPOCH + timedelta(days=float(days))

    def text(self, low: int, high: int) -> str:
        n = int(self.rng.integers(low, high))
        return " ".join(self.words[self.rng.integers(0, len(self.words), n)])

    def vectors(self, n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        vecs = self.rng.standard_normal((n, DIMENSION), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs

    def users(self) -> Iterator[Sequence[Any]]:
        for i, uid in enumerate(self.user_ids):
            created = self.stamp(self.user_created[i])
            yield (
                uid,
                f"user{i}@example.com",
                f"{self.text(1, 2).title()} User {i}",
                created,
                created,
            )

    def chatbots(self) -> Iterator[Sequence[Any]]:
        for i, cid in enumerate(self.chatbot_ids):
            status = STATUSES[int(self.rng.integers(0, len(STATUSES)))]
            reason = "crawl failed: HTTP 503" if status == "failed" else None
            created = self.stamp(self.chatbot_created[i])
            owner = self.user_ids[self.chatbot_owner[i]]
            yield (
                cid,
                owner,
                f"Bot {i} {self.text(1, 3)}",
                f"https://site{i}.example.com",
                status,
                reason,
                created,
                created,
            )

    def subscriptions(self) -> Iterator[Sequence[Any]]:
        ids = self._uuids(self.counts["subscriptions"])
        for i, sid in enumerate(ids):
            status = SUB_STATUSES[int(self.rng.integers(0, len(SUB_STATUSES)))]
            created = self.user_created[i] + float(self.rng.uniform(0, 5))
            period_end = self.stamp(created + 30) if status != "canceled" else None
            plan = PLANS[int(self.rng.integers(0, len(PLANS)))]
            yield (sid, self.user_ids[i], plan, status, period_end, self.stamp(created))

    def conversations(self) -> Iterator[Sequence[Any]]:
        for i, cid in enumerate(self.conversation_ids):
            bot = self.conversation_bot[i]
            created = self.chatbot_created[bot] + float(self.rng.uniform(1, 90))
            yield (
                cid,
                self.chatbot_ids[bot],
                f"visitor-{int(self.rng.integers(0, 10**9))}",
                self.stamp(created),
            )

    def messages(self) -> Iterator[Sequence[Any]]:
        for i in range(self.counts["messages"]):
            conv = int(self.rng.integers(0, self.counts["conversations"]))
            bot = self.conversation_bot[conv]
            created = self.chatbot_created[bot] + 1 + float(self.rng.uniform(0, 100))
            role = "user" if i % 2 == 0 else "assistant"
            yield (i + 1, self.conversation_ids[conv], role, self.text(5, 60), self.stamp(created))

    def embeddings(self, as_array: bool) -> Iterator[Sequence[Any]]:
        n = self.counts["embeddings"]
        for start in range(0, n, BATCH):
            vecs = self.vectors(min(BATCH, n - start))
            for j, vec in enumerate(vecs):
                bot = int(self.rng.integers(0, self.counts["chatbots"]))
                created = self.stamp(self.chatbot_created[bot] + float(self.rng.uniform(0, 2)))
                yield (
                    start + j + 1,
                    self.chatbot_ids[bot],
                    f"https://site{bot}.example.com/p{j}",
                    self.text(40, 160),
                    vec.tolist() if as_array else vec,
                    created,
                )

    def knowledge_base(self, as_array: bool) -> Iterator[Sequence[Any]]:
        n = self.counts["knowledge_base"]
        for start in range(0, n, BATCH):
            vecs = self.vectors(min(BATCH, n - start))
            for j, vec in enumerate(vecs):
                bot = int(self.rng.integers(0, self.counts["chatbots"]))
                created = self.stamp(self.chatbot_created[bot] + float(self.rng.uniform(0, 30)))
                enabled = bool(self.rng.random() < 0.9)
                yield (
                    start + j + 1,
                    self.chatbot_ids[bot],
                    self.text(4, 14) + "?",
                    self.text(15, 80),
                    enabled,
                    vec.tolist() if as_array else vec,
                    created,
                )


COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "users": (
        ("id", "uuid"),
        ("email", "text"),
        ("full_name", "text"),
        ("created_at", "timestamptz"),
        ("updated_at", "timestamptz"),
    ),
    "chatbots": (
        ("id", "uuid"),
        ("user_id", "uuid"),
        ("name", "text"),
        ("website_url", "text"),
        ("status", "text"),
        ("status_reason", "text"),
        ("created_at", "timestamptz"),
        ("updated_at", "timestamptz"),
    ),
    "subscriptions": (
        ("id", "uuid"),
        ("user_id", "uuid"),
        ("plan", "text"),
        ("status", "text"),
        ("current_period_end", "timestamptz"),
        ("created_at", "timestamptz"),
    ),
    "conversations": (
        ("id", "uuid"),
        ("chatbot_id", "uuid"),
        ("visitor_id", "text"),
        ("created_at", "timestamptz"),
    ),
    "messages": (
        ("id", "int8"),
        ("conversation_id", "uuid"),
        ("role", "text"),
        ("content", "text"),
        ("created_at", "timestamptz"),
    ),
    "embeddings": (
        ("id", "int8"),
        ("chatbot_id", "uuid"),
        ("source_url", "text"),
        ("content", "text"),
        ("embedding", "vector"),
        ("created_at", "timestamptz"),
    ),
    "knowledge_base": (
        ("id", "int8"),
        ("chatbot_id", "uuid"),
        ("question", "text"),
        ("answer", "text"),
        ("enabled", "bool"),
        ("embedding", "vector"),
        ("created_at", "timestamptz"),
    ),
}


def _sql_file(name: str) -> str:
    return resources.files("pgdr.sample").joinpath(name).read_text()


def _existing_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(%s)",
        (list(TABLES),),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _prepare_schema(conn: psycopg.Connection[Any], vector_type: VectorType, force: bool) -> None:
    existing = _existing_tables(conn)
    if existing and not force:
        raise ConfigError(
            f"The database already has ConvoAI tables ({', '.join(existing)}); "
            "pass --force to drop and reload them."
        )
    for name in reversed(TABLES):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    if vector_type is VectorType.VECTOR:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise RuntimeFailure(
                "pgvector is not installed on this server; load with --vector-type real[] "
                "or use a server with the vector extension."
            )
        conn.execute("CREATE SCHEMA IF NOT EXISTS extensions")
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA extensions")
        vector_sql, kb_sql = "extensions.vector(1536)", "vector(1536)"
    else:
        vector_sql = kb_sql = "real[]"
    dbname = conn.info.dbname
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET search_path = public, extensions").format(
            sql.Identifier(dbname)
        )
    )
    conn.execute("SET search_path = public, extensions")
    conn.execute(_sql_file("schema.sql").format(vector=vector_sql, kb_vector=kb_sql).encode())


def _copy_rows(
    conn: psycopg.Connection[Any],
    table: str,
    rows: Iterator[Sequence[Any]],
    vector_type: VectorType,
    progress: ProgressCallback | None,
) -> int:
    columns = COLUMNS[table]
    types = [
        ("real[]" if t == "vector" and vector_type is VectorType.ARRAY else t) for _, t in columns
    ]
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
    )
    count = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
            count += 1
            if progress and count % BATCH == 0:
                progress(table, BATCH)
    if progress and count % BATCH:
        progress(table, count % BATCH)
    return count


def load_sample(
    conninfo: str,
    *,
    scale: float = 1.0,
    seed: int = 42,
    vector_type: VectorType = VectorType.VECTOR,
    force: bool = False,
    vector_indexes: bool = True,
    progress: ProgressCallback | None = None,
) -> SampleReport:
    """Create the schema and load ``scale`` worth of data; never replace tables without force."""
    counts = scale_counts(scale)
    gen = _Generator(seed, counts)
    as_array = vector_type is VectorType.ARRAY
    with connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            _prepare_schema(conn, vector_type, force)
        if not as_array:
            from pgvector.psycopg import register_vector  # noqa: PLC0415 - needs the extension

            register_vector(conn)
        started = time.perf_counter()
        sources: dict[str, Iterator[Sequence[Any]]] = {
            "users": gen.users(),
            "chatbots": gen.chatbots(),
            "subscriptions": gen.subscriptions(),
            "conversations": gen.conversations(),
            "messages": gen.messages(),
            "embeddings": gen.embeddings(as_array),
            "knowledge_base": gen.knowledge_base(as_array),
        }
        rows = {}
        with conn.transaction():
            for table in TABLES:
                rows[table] = _copy_rows(conn, table, sources[table], vector_type, progress)
            for table in ("messages", "embeddings", "knowledge_base"):
                conn.execute(
                    sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), {})").format(
                        sql.Literal(table), sql.Literal(rows[table])
                    )
                )
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(_sql_file("indexes.sql").encode())
        if vector_indexes and not as_array:
            conn.execute("SET maintenance_work_mem = '256MB'")
            conn.execute(_sql_file("vector_indexes.sql").encode())
        conn.execute("ANALYZE")
        index_seconds = time.perf_counter() - started
        size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return SampleReport(
        scale=scale,
        seed=seed,
        vector_type=vector_type.value,
        rows=rows,
        load_seconds=round(load_seconds, 3),
        index_seconds=round(index_seconds, 3),
        database_bytes=int(size_row[0]) if size_row else 0,
    )


def total_rows(scale: float) -> int:
    return sum(scale_counts(scale).values())
