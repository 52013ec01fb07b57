"""The LLM arbiter's database (internal): answer cache, decision log, small state, budget ledger.

A SQLite file by default (``llm.cache_path``, WAL mode, safe for many processes on one host), or any
database SQLAlchemy reaches through ``llm.cache_url`` (PostgreSQL for workers on many hosts). Tables:

  cache      key = sha256(endpoint + model + full prompt + mode) -> an answer that parsed and validated
  decisions  one row per question asked for an item (cached or not), the last one per item marked final
  state      small JSON values (detected output mode per endpoint+model, calibration per model)
  budget     per run id and kind (calls | tokens | usd): the amount all workers together have used

On PostgreSQL the tables live in the schema ``shelfwise_llm`` (the queue may share the database and has
its own ``decisions`` table). Budget updates are single conditional statements (``UPDATE ... SET used = used + n WHERE used + n <=
limit``): the database serialises them, so workers in many processes never overrun a limit together.
Tables are created on the first open for writing; `read_llm_log` only reads.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import polars as pl
import sqlalchemy as sa

from shelfwise.errors import ConfigError

__all__: list[str] = []

_META = sa.MetaData()
CACHE = sa.Table(
    "cache",
    _META,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("raw_answer", sa.Text),
    sa.Column("answer_p", sa.Float),
    sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
    sa.Column("finish_reason", sa.Text),
    sa.Column("created_at", sa.Text, nullable=False),
)
DECISIONS = sa.Table(
    "decisions",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, nullable=False, index=False),
    sa.Column("sku_id", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("is_final", sa.Integer, nullable=False),
    sa.Column("prompt_hash", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("mode", sa.Text),
    sa.Column("raw_answer", sa.Text),
    sa.Column("parsed_answer", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("category_id", sa.Text),
    sa.Column("confidence", sa.Float),
    sa.Column("reason", sa.Text),
    sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("latency_ms", sa.Float),
    sa.Column("cached", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Text, nullable=False),
)
_INDEXES = (
    sa.Index("decisions_run", DECISIONS.c.run_id),
    sa.Index("decisions_sku", DECISIONS.c.sku_id),
)
STATE = sa.Table(
    "state",
    _META,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)
BUDGET = sa.Table(
    "budget",
    _META,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("used", sa.Float, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Text, nullable=False),
)

DECISION_COLUMNS = tuple(c.name for c in DECISIONS.columns if c.name != "id")

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

_SQLITE_BUSY_MS = 60_000
PG_SCHEMA = "shelfwise_llm"


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def database_url(location: str | Path) -> sa.URL:
    """A SQLAlchemy URL for a file path or a URL (``postgresql://`` gets the psycopg 3 driver)."""
    text = str(location)
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text).expanduser()))
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            f"llm.cache_url {text!r} is not a valid database URL ({exc}); use e.g. "
            "postgresql+psycopg://user@host:5432/dbname, or set llm.cache_path to a SQLite file"
        ) from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"llm.cache_url uses backend {url.get_backend_name()!r}; the LLM store supports "
            "postgresql+psycopg://... and sqlite:///path.sqlite"
        )
    return url


def _engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)
    engine = sa.create_engine(
        url, connect_args={"timeout": _SQLITE_BUSY_MS / 1000, "check_same_thread": False}
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def _in_schema(engine: sa.Engine) -> sa.Engine:
    """On PostgreSQL, the same engine with the tables in `PG_SCHEMA`."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(schema_translate_map={None: PG_SCHEMA})


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


class Store:
    """The arbiter's tables in one database; thread-safe; a context manager (closes its engine)."""

    def __init__(self, location: str | Path) -> None:
        self.url = database_url(location)
        path = _sqlite_path(self.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.location = str(path) if path is not None else self.url.render_as_string(hide_password=True)
        self._base = _engine(self.url)
        self._dialect = self._base.dialect.name
        self._engine = _in_schema(self._base)
        self._create_tables()

    def _create_tables(self) -> None:
        statements: list[Any] = []
        if self._dialect == "postgresql":
            statements.append(sa.schema.CreateSchema(PG_SCHEMA, if_not_exists=True))
        statements += [sa.schema.CreateTable(t, if_not_exists=True) for t in _META.sorted_tables]
        statements += [sa.schema.CreateIndex(i, if_not_exists=True) for i in _INDEXES]
        for attempt in range(5):  # two processes creating the same tables at once may collide
            try:
                with self._engine.begin() as conn:
                    for stmt in statements:
                        conn.execute(stmt)
                return
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def close(self) -> None:
        self._base.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _upsert(self, table: sa.Table, values: dict[str, Any], keys: list[str]) -> Any:
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(table).values(**values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in values if c not in keys}
        )

    # cache ---------------------------------------------------------------------------------------
    def cache_get(self, key: str) -> dict[str, Any] | None:
        c = CACHE.c
        query = sa.select(c.raw_answer, c.answer_p, c.tokens_in, c.tokens_out, c.finish_reason, c.mode).where(
            c.key == key
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else dict(row)

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
        values = {
            "key": key,
            "model": model,
            "mode": mode,
            "raw_answer": raw_answer,
            "answer_p": answer_p,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "finish_reason": finish_reason,
            "created_at": utcnow(),
        }
        with self._engine.begin() as conn:
            conn.execute(self._upsert(CACHE, values, ["key"]))

    def cache_drop(self, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(CACHE).where(CACHE.c.key == key))

    # decisions -----------------------------------------------------------------------------------
    def record(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        now = utcnow()
        values = [
            {
                c: now
                if c == "created_at"
                else (
                    int(r.get(c) or 0) if c in ("is_final", "cached", "tokens_in", "tokens_out") else r.get(c)
                )
                for c in DECISION_COLUMNS
            }
            for r in rows
        ]
        for v in values:
            v["cost_usd"] = float(v["cost_usd"] or 0.0)
        with self._engine.begin() as conn:
            conn.execute(sa.insert(DECISIONS), values)

    def decisions_frame(self, *, run_id: str | None = None, final_only: bool = False) -> pl.DataFrame:
        with self._engine.connect() as conn:
            return _decisions(conn, run_id=run_id, final_only=final_only)

    # state ---------------------------------------------------------------------------------------
    def state_get(self, key: str) -> Any:
        with self._engine.connect() as conn:
            value = conn.execute(sa.select(STATE.c.value).where(STATE.c.key == key)).scalar()
        return None if value is None else json.loads(value)

    def state_put(self, key: str, value: Any) -> None:
        values = {"key": key, "value": json.dumps(value), "updated_at": utcnow()}
        with self._engine.begin() as conn:
            conn.execute(self._upsert(STATE, values, ["key"]))

    # budget ledger -------------------------------------------------------------------------------
    def budget_take(self, run_id: str, kind: str, amount: float, limit: float) -> bool:
        """Add ``amount`` to the run's ``kind`` only if the total stays within ``limit`` (atomic)."""
        b = BUDGET.c
        with self._engine.begin() as conn:
            self._budget_row(conn, run_id, kind)
            done = conn.execute(
                sa.update(BUDGET)
                .where(b.run_id == run_id, b.kind == kind, b.used + amount <= limit)
                .values(used=b.used + amount, updated_at=utcnow())
            )
        return bool(done.rowcount == 1)

    def budget_add(self, run_id: str, kind: str, amount: float) -> None:
        """Add ``amount`` (may be negative: a reservation given back) without a limit."""
        b = BUDGET.c
        with self._engine.begin() as conn:
            self._budget_row(conn, run_id, kind)
            conn.execute(
                sa.update(BUDGET)
                .where(b.run_id == run_id, b.kind == kind)
                .values(used=b.used + amount, updated_at=utcnow())
            )

    def budget_used(self, run_id: str, kind: str) -> float:
        b = BUDGET.c
        with self._engine.connect() as conn:
            used = conn.execute(sa.select(b.used).where(b.run_id == run_id, b.kind == kind)).scalar()
        return float(used or 0.0)

    def _budget_row(self, conn: sa.Connection, run_id: str, kind: str) -> None:
        values = {"run_id": run_id, "kind": kind, "used": 0.0, "updated_at": utcnow()}
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(BUDGET).values(**values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(BUDGET).values(**values)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "kind"]))


def _decisions(conn: sa.Connection, *, run_id: str | None, final_only: bool) -> pl.DataFrame:
    d = DECISIONS.c
    query = sa.select(d.id, *(d[c] for c in DECISION_COLUMNS)).order_by(d.id)
    if run_id is not None:
        query = query.where(d.run_id == run_id)
    if final_only:
        query = query.where(d.is_final == 1)
    rows = conn.execute(query).all()
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
    path = _sqlite_path(url)
    empty = pl.DataFrame(schema=DECISIONS_SCHEMA)
    if path is not None and not path.is_file():
        return empty
    engine = _engine(url) if path is None else sa.create_engine(url, poolclass=sa.pool.NullPool)
    schema = PG_SCHEMA if path is None else None
    try:
        if not sa.inspect(engine).has_table("decisions", schema=schema):
            return empty
        with _in_schema(engine).connect() as conn:
            return _decisions(conn, run_id=run_id, final_only=final_only)
    finally:
        engine.dispose()
