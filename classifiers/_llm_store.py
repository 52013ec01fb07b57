"""SQLite store of the LLM arbiter (internal): answer cache, decision log and small arbiter state.

One file, three tables:
  cache      key = sha256(model + full prompt + mode) -> raw answer, answer-token probability, token counts
  decisions  one row per question asked for an item (cached or not), the last one per item marked final
  state      small JSON values (detected output mode per endpoint+model, calibration per model)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

__all__: list[str] = []

_SCHEMA = """
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


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """Thread-safe access to the arbiter's SQLite file (WAL mode, one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(_SCHEMA)
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # cache ---------------------------------------------------------------------------------------
    def cache_get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT raw_answer, answer_p, tokens_in, tokens_out, finish_reason, mode FROM cache WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return {
            "raw_answer": row[0],
            "answer_p": row[1],
            "tokens_in": row[2],
            "tokens_out": row[3],
            "finish_reason": row[4],
            "mode": row[5],
        }

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
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, mode, raw_answer, answer_p, tokens_in, tokens_out, finish_reason, utcnow()),
            )
            self._conn.commit()

    # decisions -----------------------------------------------------------------------------------
    def record(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        now = utcnow()
        values = [
            tuple(
                now
                if c == "created_at"
                else (int(r.get(c) or 0) if c in ("is_final", "cached") else r.get(c))
                for c in DECISION_COLUMNS
            )
            for r in rows
        ]
        placeholders = ", ".join("?" for _ in DECISION_COLUMNS)
        with self._lock:
            self._conn.executemany(
                f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({placeholders})", values
            )
            self._conn.commit()

    def decisions_frame(self, *, run_id: str | None = None, final_only: bool = False) -> pl.DataFrame:
        sql = f"SELECT id, {', '.join(DECISION_COLUMNS)} FROM decisions"
        where, args = [], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if final_only:
            where.append("is_final = 1")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        names = ["id", *DECISION_COLUMNS]
        data = {n: [r[i] for r in rows] for i, n in enumerate(names)}
        for b in ("is_final", "cached"):
            data[b] = [bool(v) for v in data[b]]
        return pl.DataFrame(data, schema=DECISIONS_SCHEMA)

    # state ---------------------------------------------------------------------------------------
    def state_get(self, key: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def state_put(self, key: str, value: Any) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, json.dumps(value), utcnow())
            )
            self._conn.commit()
