"""The LLM arbiter's database (internal): answer cache, decision log, small state, budget ledger.

A SQLite file by default (``llm.cache_path``, WAL mode, safe for many processes on one host), or a
PostgreSQL database through ``llm.cache_url`` (for workers on many hosts). Tables:

  cache      key = sha256(endpoint + model + full prompt + mode) -> an answer that parsed and validated
  decisions  one row per question asked for an item (cached or not), the last one per item marked final
  state      small JSON values (detected output mode per endpoint+model, calibration per model)
  budget     per run id and kind (calls | tokens | usd): the amount all workers together have used

On PostgreSQL the tables live in the schema ``shelfwise_llm`` (the queue may share the database and has
its own ``decisions`` table). Budget updates are single conditional statements
(``UPDATE ... SET used = used + n WHERE ... AND used + n <= limit``) inside a write transaction: the
database serialises them, so workers in many processes never overrun a limit together.
Tables are created on the first open for writing; `read_llm_log` only reads. SQLAlchemy only parses URLs
here: the queries go straight to sqlite3 / psycopg (a cache look-up is on the hot path of every night).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import polars as pl
import sqlalchemy as sa

from shelfwise.dburl import database_url as _parse_url
from shelfwise.errors import ConfigError

__all__: list[str] = []

_DDL = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    raw_answer TEXT,
    answer_p REAL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    sku_id TEXT NOT NULL,
    step TEXT NOT NULL,
    is_final INTEGER NOT NULL,
    prompt_hash TEXT,
    model TEXT,
    mode TEXT,
    raw_answer TEXT,
    parsed_answer TEXT,
    status TEXT NOT NULL,
    category_id TEXT,
    confidence REAL,
    reason TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_ms REAL,
    cached INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_run ON decisions(run_id);
CREATE INDEX IF NOT EXISTS decisions_sku ON decisions(sku_id);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS budget (
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    used REAL NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
)
"""

DECISION_COLUMNS = (
    "run_id",
    "sku_id",
    "step",
    "is_final",
    "prompt_hash",
    "model",
    "mode",
    "raw_answer",
    "parsed_answer",
    "status",
    "category_id",
    "confidence",
    "reason",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_ms",
    "cached",
    "created_at",
)

DECISIONS_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "run_id": pl.String,
    "sku_id": pl.String,
    "step": pl.String,
    "is_final": pl.Boolean,
    "prompt_hash": pl.String,
    "model": pl.String,
    "mode": pl.String,
    "raw_answer": pl.String,
    "parsed_answer": pl.String,
    "status": pl.String,
    "category_id": pl.String,
    "confidence": pl.Float64,
    "reason": pl.String,
    "tokens_in": pl.Int64,
    "tokens_out": pl.Int64,
    "cost_usd": pl.Float64,
    "latency_ms": pl.Float64,
    "cached": pl.Boolean,
    "created_at": pl.String,
}

_SQLITE_BUSY_S = 60.0
PG_SCHEMA = "shelfwise_llm"


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def database_url(location: str | Path) -> sa.URL:
    """A SQLAlchemy URL for a file path or a URL (``postgresql://`` gets the psycopg 3 driver)."""
    text = str(location)
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text).expanduser()))
    url = _parse_url(
        text,
        setting="llm.cache_url",
        example="postgresql+psycopg://user@host:5432/dbname, or set llm.cache_path to a SQLite file",
    )
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"llm.cache_url uses backend {url.get_backend_name()!r}; the LLM store supports "
            "postgresql+psycopg://... and sqlite:///path.sqlite"
        )
    if url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:"):
        raise ConfigError(f"llm.cache_url {text!r}: the LLM store needs a SQLite file, not memory")
    return url


def _pg_connect(url: sa.URL) -> Any:
    import psycopg

    params = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    kwargs: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    kwargs.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return psycopg.connect(autocommit=True, options=f"-c search_path={PG_SCHEMA}", **kwargs)


def _sqlite_connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=_SQLITE_BUSY_S, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(
            str(path), timeout=_SQLITE_BUSY_S, check_same_thread=False, isolation_level=None
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_S * 1000)}")
    return conn


class Store:
    """The arbiter's tables in one database: one connection behind a lock (thread-safe); a context manager.

    SQLite runs in autocommit mode with ``BEGIN IMMEDIATE`` around every write, so writers of several
    processes queue on the database lock (busy timeout) instead of failing; PostgreSQL (psycopg 3) runs
    each write in its own transaction, tables in the schema `PG_SCHEMA`.
    """

    def __init__(self, location: str | Path) -> None:
        self.url = database_url(location)
        self.pg = self.url.get_backend_name() == "postgresql"
        self._lock = threading.Lock()
        if self.pg:
            self.location = self.url.render_as_string(hide_password=True)
            self._conn: Any = _pg_connect(self.url)
        else:
            path = Path(str(self.url.database))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.location = str(path)
            self._conn = _sqlite_connect(path)
        self._create_tables()

    def _create_tables(self) -> None:
        statements = [s.strip() for s in _DDL.split(";") if s.strip()]
        if self.pg:
            statements = [f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"] + [
                s.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace(
                    " REAL", " DOUBLE PRECISION"
                )
                for s in statements
            ]
        for attempt in range(5):  # two processes creating the same tables at once may collide
            try:
                with self._write() as cur:
                    for stmt in statements:
                        cur.execute(stmt)
                return
            except Exception as exc:  # psycopg's or sqlite3's error: retried a few times
                if attempt == 4 or not _is_db_error(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # plumbing --------------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def _heal(self) -> None:
        """Reconnect when the PostgreSQL connection died (server restart): the pool pre-ping of one
        connection; the statement that found it dead failed, the next one runs on a new connection."""
        if self.pg and (self._conn.closed or self._conn.broken):
            self._conn = _pg_connect(self.url)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._lock:
            self._heal()
            cur = self._conn.cursor()
            try:
                yield cur
            finally:
                cur.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One transaction; on SQLite it takes the write lock first (BEGIN IMMEDIATE)."""
        with self._lock:
            self._heal()
            if self.pg:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
                return
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    # cache ---------------------------------------------------------------------------------------
    def cache_get(self, key: str) -> dict[str, Any] | None:
        sql = (
            "SELECT raw_answer, answer_p, tokens_in, tokens_out, finish_reason, mode FROM cache WHERE key = ?"
        )
        with self._read() as cur:
            cur.execute(self._sql(sql), (key,))
            row = cur.fetchone()
        if row is None:
            return None
        names = ("raw_answer", "answer_p", "tokens_in", "tokens_out", "finish_reason", "mode")
        return dict(zip(names, row, strict=True))

    def cache_put(
        self,
        key: str,
        *,
        model: str,
        mode: str,
        raw_answer: str | None,
        answer_p: float | None,
        tokens_in: int,
        tokens_out: int,
        finish_reason: str | None,
    ) -> None:
        """Keep one answer. The caller stores only answers that parsed and validated."""
        sql = (
            "INSERT INTO cache (key, model, mode, raw_answer, answer_p, tokens_in, tokens_out, "
            "finish_reason, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "model = excluded.model, mode = excluded.mode, raw_answer = excluded.raw_answer, "
            "answer_p = excluded.answer_p, tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, "
            "finish_reason = excluded.finish_reason, created_at = excluded.created_at"
        )
        args = (key, model, mode, raw_answer, answer_p, tokens_in, tokens_out, finish_reason, utcnow())
        with self._write() as cur:
            cur.execute(self._sql(sql), args)

    def cache_drop(self, key: str) -> None:
        with self._write() as cur:
            cur.execute(self._sql("DELETE FROM cache WHERE key = ?"), (key,))

    # decisions -----------------------------------------------------------------------------------
    def record(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        now = utcnow()
        ints = ("is_final", "cached", "tokens_in", "tokens_out")
        values = [
            tuple(
                now if c == "created_at" else (int(r.get(c) or 0) if c in ints else r.get(c))
                for c in DECISION_COLUMNS
            )
            for r in rows
        ]
        values = [v[:15] + (float(v[15] or 0.0),) + v[16:] for v in values]  # cost_usd
        marks = ", ".join("?" for _ in DECISION_COLUMNS)
        sql = f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({marks})"
        with self._write() as cur:
            cur.executemany(self._sql(sql), values)

    def decisions_frame(self, *, run_id: str | None = None, final_only: bool = False) -> pl.DataFrame:
        with self._read() as cur:
            return _decisions(cur, run_id=run_id, final_only=final_only, pg=self.pg)

    # state ---------------------------------------------------------------------------------------
    def state_get(self, key: str) -> Any:
        with self._read() as cur:
            cur.execute(self._sql("SELECT value FROM state WHERE key = ?"), (key,))
            row = cur.fetchone()
        return None if row is None else json.loads(row[0])

    def state_put(self, key: str, value: Any) -> None:
        sql = (
            "INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        )
        with self._write() as cur:
            cur.execute(self._sql(sql), (key, json.dumps(value), utcnow()))

    # budget ledger -------------------------------------------------------------------------------
    _BUDGET_ROW = (
        "INSERT INTO budget (run_id, kind, used, updated_at) VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING"
    )

    def budget_take(self, run_id: str, kind: str, amount: float, limit: float) -> bool:
        """Add ``amount`` to the run's ``kind`` only if the total stays within ``limit`` (atomic)."""
        sql = (
            "UPDATE budget SET used = used + ?, updated_at = ? WHERE run_id = ? AND kind = ? AND used + ? "
            "<= ?"
        )
        now = utcnow()
        with self._write() as cur:
            cur.execute(self._sql(self._BUDGET_ROW), (run_id, kind, now))
            cur.execute(self._sql(sql), (amount, now, run_id, kind, amount, limit))
            return bool(cur.rowcount == 1)

    def budget_add(self, run_id: str, kind: str, amount: float) -> None:
        """Add ``amount`` (may be negative: a reservation given back) without a limit."""
        sql = "UPDATE budget SET used = used + ?, updated_at = ? WHERE run_id = ? AND kind = ?"
        now = utcnow()
        with self._write() as cur:
            cur.execute(self._sql(self._BUDGET_ROW), (run_id, kind, now))
            cur.execute(self._sql(sql), (amount, now, run_id, kind))

    def budget_used(self, run_id: str, kind: str) -> float:
        with self._read() as cur:
            cur.execute(self._sql("SELECT used FROM budget WHERE run_id = ? AND kind = ?"), (run_id, kind))
            row = cur.fetchone()
        return float(row[0]) if row is not None else 0.0


def _is_db_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a core dependency
        return False
    return isinstance(exc, psycopg.Error)


def _decisions(cur: Any, *, run_id: str | None, final_only: bool, pg: bool) -> pl.DataFrame:
    sql = f"SELECT id, {', '.join(DECISION_COLUMNS)} FROM decisions"
    where: list[str] = []
    args: list[Any] = []
    if run_id is not None:
        where.append("run_id = ?")
        args.append(run_id)
    if final_only:
        where.append("is_final = 1")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id"
    cur.execute(sql.replace("?", "%s") if pg else sql, args)
    rows = cur.fetchall()
    names = ["id", *DECISION_COLUMNS]
    data: dict[str, list[Any]] = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    for b in ("is_final", "cached"):
        data[b] = [bool(v) for v in data[b]]
    return pl.DataFrame(data, schema=DECISIONS_SCHEMA)


def read_llm_log(
    location: str | Path, *, run_id: str | None = None, final_only: bool = False
) -> pl.DataFrame:
    """The LLM decision log as a frame (one row per question; ``is_final`` marks an item's outcome).

    ``location``: the SQLite file or database URL (``LLMSettings.store_location(state_dir)``). Reads only:
    a missing file or a database without the table gives an empty frame with the log's columns.
    """
    url = database_url(location)
    empty = pl.DataFrame(schema=DECISIONS_SCHEMA)
    pg = url.get_backend_name() == "postgresql"
    if pg:
        conn = _pg_connect(url)
        exists = "SELECT to_regclass(%s) IS NOT NULL"
        args: tuple[str, ...] = (f"{PG_SCHEMA}.decisions",)
    else:
        path = Path(str(url.database))
        if not path.is_file():
            return empty
        conn = _sqlite_connect(path, read_only=True)
        exists = "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?"
        args = ("decisions",)
    try:
        cur = conn.cursor()
        cur.execute(exists, args)
        if not cur.fetchone()[0]:
            return empty
        return _decisions(cur, run_id=run_id, final_only=final_only, pg=pg)
    finally:
        conn.close()
