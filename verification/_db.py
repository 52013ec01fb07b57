"""Engine set-up for SQLite and PostgreSQL, and the in-code Alembic configuration."""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shelfwise.dburl import database_url
from shelfwise.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "make_engines",
    "run_upgrade",
    "sqlite_write_lock",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_UPGRADE_LOCK = 0x5E1F_0001  # pg_advisory_xact_lock key: one upgrade at a time


_SQLITE_WRITE_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def sqlite_write_lock(url: str) -> threading.Lock | None:
    """One in-process lock per SQLite database file, shared by every store on that file.

    SQLite admits one writer at a time; writers of one process queue on this lock (blocking, roughly
    first come first served) instead of polling the busy handler, where a thread can starve for many
    seconds when 8 reviewers write at once. Other processes still wait through the busy timeout.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ":memory:"
    key = (
        database if database == ":memory:" or database.startswith("file:") else str(Path(database).resolve())
    )
    with _REGISTRY_LOCK:
        return _SQLITE_WRITE_LOCKS.setdefault(key, threading.Lock())


def utcnow() -> _dt.datetime:
    """Naive UTC now (how timestamps are stored)."""
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


def make_engines(url: str) -> tuple[sa.Engine, sa.Engine]:
    """Return ``(engine, write_engine)`` for ``url``.

    On SQLite the pysqlite driver's own transaction handling is switched off and transactions are begun
    explicitly: ``BEGIN`` for reads and ``BEGIN IMMEDIATE`` for writes (``write_engine``), so two writers
    queue on the database lock (busy timeout) instead of failing to upgrade a read lock, and a claim's
    select-then-update is atomic. WAL mode lets readers proceed during writes. On PostgreSQL both are
    the same engine (row locks with ``FOR UPDATE SKIP LOCKED`` do the work).
    """
    parsed = database_url(
        url,
        setting="queue database URL",
        example="sqlite:///.shelfwise/queue.db or postgresql+psycopg://user@host:5432/dbname",
    )
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        }
        if not database or database == ":memory:":
            kwargs["poolclass"] = sa.pool.StaticPool
        engine = sa.create_engine(parsed, **kwargs)
        _install_sqlite_hooks(engine, in_memory=not database or database == ":memory:")
        return engine, engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    if backend == "postgresql":
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
        return engine, engine
    raise ConfigError(
        f"queue database URL {parsed.render_as_string(hide_password=True)!r} uses backend {backend!r}; "
        "the queue store supports sqlite:///path.db and postgresql+psycopg://..."
    )


def _install_sqlite_hooks(engine: sa.Engine, *, in_memory: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` built in code, pointing at the packaged ``verification/migrations`` folder."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run_upgrade(write_engine: sa.Engine, *, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on the engine's database (idempotent)."""
    from alembic import command

    cfg = alembic_config()
    with write_engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_UPGRADE_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: sa.Engine) -> str | None:
    """The Alembic revision the database is at (``None`` before the first upgrade)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped in ``verification/migrations``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
