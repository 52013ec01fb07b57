"""Read everything a report needs, defensively: every source may be missing or empty.

Each loader returns a frame (possibly empty, with the expected columns) and appends a plain-language
note to ``RunInputs.missing`` when a source could not be read, so each report section can say what is
missing instead of crashing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from classifiers.llm import read_llm_log as read_log  # a plain reader: no arbiter, no writes
from shelfwise import storage
from shelfwise.errors import ConfigError
from shelfwise.model_folder import load_model_taxonomy
from shelfwise.settings import Settings
from shelfwise.state import current_state
from shelfwise.summary import RunSummary
from verification.store import QueueStore

log = logging.getLogger("shelfwise.reports")

# The predictions columns the report's figures use, and only those: the frame is held whole (a 5M-SKU
# night's), so a column nothing reads is not read.
PREDICTION_READ_COLUMNS = (
    "sku_id",
    "category_id",
    "category_path",
    "confidence",
    "route",
    "current_category_path",
    "taxonomy_version",
    "model_version",
    "predicted_depth",
    "reason",
    "queue",
)

# The columns of the queue store's tables (QueueStore.decisions_frame / items_frame / labels) the report
# reads.
DECISION_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "item_id": pl.Int64,
    "sku_id": pl.String,
    "queue": pl.String,
    "reviewer": pl.String,
    "decided_at": pl.Datetime("us"),
    "kind": pl.String,
    "category_id": pl.String,
    "category_path": pl.String,
    "duration_ms": pl.Int64,
    "review_round": pl.Int64,
    "final": pl.Boolean,
    "shown_category_id": pl.String,
    "shown_category_path": pl.String,
    "shown_confidence": pl.Float64,
    "current_category_path": pl.String,
    "model_version": pl.String,
    "run_id": pl.String,
}

ITEM_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "sku_id": pl.String,
    "queue": pl.String,
    "status": pl.String,
    "created_at": pl.Datetime("us"),
    "updated_at": pl.Datetime("us"),
    "run_id": pl.String,
    "current_category_path": pl.String,
    "suggested_category_id": pl.String,
    "suggested_category_path": pl.String,
    "confidence": pl.Float64,
    "reviews_required": pl.Int64,
    "reviews_done": pl.Int64,
    "final_kind": pl.String,
    "final_category_id": pl.String,
    "final_category_path": pl.String,
}

STATE_SEEN_SCHEMA: dict[str, Any] = {"last_seen_run": pl.String, "skus": pl.Int64}

LABEL_SCHEMA: dict[str, Any] = {"sku_id": pl.String, "category_id": pl.String, "category_path": pl.String}

QUARANTINE_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "row_number": pl.Int64,
    "sku_id": pl.String,
    "field": pl.String,
    "reason": pl.String,
    "fix": pl.String,
    "severity": pl.String,
}


@dataclass
class RunInputs:
    """Everything read for one run's report. Frames are never None: empty means 'nothing there'."""

    run_id: str
    run_dir: Path
    summary: RunSummary
    predictions: Predictions
    quarantine: pl.DataFrame
    previous_run_id: str | None
    previous_summary: RunSummary | None
    previous_predictions: Predictions | None
    catalog_state: pl.DataFrame  # STATE_SEEN_SCHEMA: SKUs of the catalog state by the run that last saw them
    taxonomy: Any
    decisions: pl.DataFrame
    items: pl.DataFrame
    labels: pl.DataFrame
    queue_ok: bool
    llm_log: pl.DataFrame = field(default_factory=pl.DataFrame)
    missing: dict[str, list[str]] = field(default_factory=dict)

    def note(self, section: str, text: str) -> None:
        self.missing.setdefault(section, []).append(text)


def resolve_run_id(run_id: str, settings: Settings) -> str:
    """``latest`` -> the newest run folder with a summary.json; otherwise the id itself (checked)."""
    runs = settings.runs_dir
    if run_id in ("", "latest"):
        done = sorted(p.parent.name for p in runs.glob("*/summary.json")) if runs.is_dir() else []
        if not done:
            raise ConfigError(
                f"report --run latest: no finished run in {runs} (no */summary.json); run `shelfwise run` or "
                "`shelfwise classify` first, or pass --state-dir of the state folder that has the runs"
            )
        return done[-1]
    if not (runs / run_id / "summary.json").is_file():
        known = sorted(p.parent.name for p in runs.glob("*/summary.json"))[-5:] if runs.is_dir() else []
        hint = f"; recent runs: {', '.join(known)}" if known else f"; {runs} has no finished run"
        raise ConfigError(
            f"report --run {run_id}: {runs / run_id / 'summary.json'} does not exist{hint}. "
            "Pass an existing run id or `latest`"
        )
    return run_id


def read_summary(run_dir: Path) -> RunSummary:
    """The typed run summary of ``run_dir`` (a clear error names the file, the field and the fix)."""
    path = run_dir / "summary.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"run summary {path} line {exc.lineno}: not valid JSON ({exc.msg}); the run did not finish "
            f"cleanly, "
            "re-run it or pick another run with --run"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"run summary {path}: expected a JSON object, found {type(data).__name__}; re-run the run"
        )
    try:
        return RunSummary.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"run summary {path}: field {field!r}: {err['msg']} ({exc.error_count()} problem(s)); it is not "
            f"a "
            "shelfwise run summary: re-run the run or pick another with --run"
        ) from exc


@dataclass(frozen=True)
class Predictions:
    """A night's predictions file, scanned lazily: figures aggregate it (group-bys, counts) and never hold
    a column of every row; ``rows`` is read from the file's metadata."""

    scan: pl.LazyFrame  # PREDICTION_READ_COLUMNS, typed
    rows: int

    def is_empty(self) -> bool:
        return self.rows == 0


def _empty_predictions() -> pl.DataFrame:
    return pl.DataFrame(schema={c: pl.String for c in PREDICTION_READ_COLUMNS}).with_columns(
        pl.col("confidence").cast(pl.Float64),
        pl.col("predicted_depth").cast(pl.Int64),
    )


def _read_predictions(path: str | Path | None, *, what: str, inputs_notes: list[str]) -> Predictions:
    empty = Predictions(_empty_predictions().lazy(), 0)
    if not path:
        inputs_notes.append(f"{what}: the run summary names no predictions file")
        return empty
    p = Path(path)
    if not p.is_file():
        inputs_notes.append(f"{what}: predictions file {p} is missing")
        return empty
    try:
        names = pl.read_parquet_schema(p)
        cols = [c for c in PREDICTION_READ_COLUMNS if c in names]
        scan = pl.scan_parquet(p).select(cols)
        rows = int(scan.select(pl.len()).collect().item())  # from the file's metadata
    except Exception as exc:  # noqa: BLE001 - a broken source must not stop the report
        inputs_notes.append(f"{what}: predictions file {p} could not be read ({exc})")
        return empty
    schema = _empty_predictions().schema
    missing = [pl.lit(None, dtype=schema[c]).alias(c) for c in PREDICTION_READ_COLUMNS if c not in cols]
    if missing:
        scan = scan.with_columns(missing)
    scan = scan.with_columns(
        pl.col("confidence").cast(pl.Float64, strict=False),
        pl.col("predicted_depth").cast(pl.Int64, strict=False),
    ).select(PREDICTION_READ_COLUMNS)
    return Predictions(scan, rows)


def _read_quarantine(path: str | Path | None, notes: list[str]) -> pl.DataFrame:
    empty = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    if not path:
        return empty
    p = Path(path)
    if not p.is_file():
        return empty
    rows = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                notes.append(f"quarantine file {p} line {lineno} is not valid JSON and was left out")
                continue
            rows.append(
                {
                    k: (None if rec.get(k) is None else str(rec.get(k)))
                    if k != "row_number"
                    else _as_int(rec.get(k))
                    for k in QUARANTINE_SCHEMA
                }
            )
    return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA) if rows else empty


def _as_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _normalise(frame: Any, schema: dict[str, Any]) -> pl.DataFrame:
    """Any frame-like (polars, pandas, list of dicts) -> polars with exactly ``schema``'s columns."""
    if frame is None:
        return pl.DataFrame(schema=schema)
    if not isinstance(frame, pl.DataFrame):
        try:
            frame = (
                pl.from_pandas(frame)
                if hasattr(frame, "to_numpy") and hasattr(frame, "iloc")
                else pl.DataFrame(frame)
            )
        except Exception:  # noqa: BLE001 - unknown frame-likes read as empty
            return pl.DataFrame(schema=schema)
    out = []
    for name, dtype in schema.items():
        if name in frame.columns:
            col = pl.col(name)
            if isinstance(dtype, pl.Datetime):
                src = frame.schema[name]
                if isinstance(src, pl.Datetime):
                    col = col.dt.replace_time_zone(None) if src.time_zone else col
                    col = col.cast(dtype)
                else:
                    col = col.cast(pl.String).str.to_datetime(strict=False, time_zone=None).cast(dtype)
            else:
                col = col.cast(dtype, strict=False)
            out.append(col.alias(name))
        else:
            out.append(pl.lit(None, dtype=dtype).alias(name))
    result: pl.DataFrame = frame.select(out)
    return result


def _sqlite_missing(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        if not db.exists():
            return db
    return None


def read_queue(settings: Settings, notes: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, bool]:
    """Decisions (audit log), review items and human labels from the queue DB (never creates the DB)."""
    decisions = pl.DataFrame(schema=DECISION_SCHEMA)
    items = pl.DataFrame(schema=ITEM_SCHEMA)
    labels = pl.DataFrame(schema=LABEL_SCHEMA)
    url = settings.queue_url or ""
    missing_db = _sqlite_missing(url)
    if missing_db is not None:
        notes.append(f"no review queue database yet ({missing_db}): nothing has been queued or reviewed")
        return decisions, items, labels, False
    try:
        store = QueueStore(url)
    except Exception as exc:  # noqa: BLE001 - a broken source must not stop the report
        notes.append(f"review queue at {_safe_url(url)} could not be opened ({type(exc).__name__}: {exc})")
        return decisions, items, labels, False

    def read(what: str, frame: Callable[[], pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame | None:
        try:
            return _normalise(frame(), schema)
        except Exception as exc:  # noqa: BLE001 - a broken source must not stop the report
            notes.append(f"{what} could not be read from {_safe_url(url)} ({type(exc).__name__}: {exc})")
            return None

    with store:
        read_decisions = read("reviewer decisions", store.decisions_frame, DECISION_SCHEMA)
        read_items = read("review items", store.items_frame, ITEM_SCHEMA)
        read_labels = read("human labels", store.labels, LABEL_SCHEMA)
    return (
        decisions if read_decisions is None else read_decisions,
        items if read_items is None else read_items,
        labels if read_labels is None else read_labels,
        read_decisions is not None,
    )


def _safe_url(url: str) -> str:
    """A database URL without its password (for messages)."""
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any unparsable URL
        return url.split("@")[-1]


def read_taxonomy(summary: RunSummary, notes: list[str]) -> Any:
    model_dir = summary.model_dir
    if not model_dir:
        notes.append("the run summary names no model directory, so the taxonomy is unknown")
        return None
    try:
        return load_model_taxonomy(Path(model_dir))
    except Exception as exc:  # noqa: BLE001 - a broken source must not stop the report
        notes.append(f"the taxonomy of model {model_dir} could not be loaded ({exc})")
        return None


def load_inputs(run_id: str, settings: Settings) -> RunInputs:
    run_id = resolve_run_id(run_id, settings)
    run_dir = settings.runs_dir / run_id
    summary = read_summary(run_dir)
    notes: dict[str, list[str]] = {}
    vol: list[str] = []
    predictions = _read_predictions(summary.predictions_path, what="this run", inputs_notes=vol)
    quarantine = _read_quarantine(summary.quarantine_path, vol)
    notes["volumes"] = vol
    drift: list[str] = []
    prev_id = summary.previous_run_id
    prev_summary = prev_pred = None
    if prev_id and (settings.runs_dir / prev_id / "summary.json").is_file():
        try:
            prev_summary = read_summary(settings.runs_dir / prev_id)
            prev_pred = _read_predictions(
                prev_summary.predictions_path, what=f"previous run {prev_id}", inputs_notes=drift
            )
        except ConfigError as exc:
            drift.append(str(exc))
    elif prev_id:
        drift.append(f"previous run {prev_id} has no summary.json any more (deleted?)")
    else:
        drift.append("this is the first run: no previous run to compare with")
    notes["drift"] = drift
    catalog_state = read_state_seen(settings)
    tax_notes: list[str] = []
    taxonomy = read_taxonomy(summary, tax_notes)
    notes["taxonomy"] = tax_notes
    q_notes: list[str] = []
    decisions, items, labels, ok = read_queue(settings, q_notes)
    notes["queue"] = q_notes
    llm_log = read_llm_log(settings, summary, vol)
    return RunInputs(
        llm_log=llm_log,
        run_id=run_id,
        run_dir=run_dir,
        summary=summary,
        predictions=predictions,
        quarantine=quarantine,
        previous_run_id=prev_id,
        previous_summary=prev_summary,
        previous_predictions=prev_pred,
        catalog_state=catalog_state,
        taxonomy=taxonomy,
        decisions=decisions,
        items=items,
        labels=labels,
        queue_ok=ok,
        missing=notes,
    )


def read_state_seen(settings: Settings) -> pl.DataFrame:
    """The catalog state's SKUs counted by ``last_seen_run`` (STATE_SEEN_SCHEMA), one bucket file at a
    time and one column of it: the state itself is never held (5M SKUs at 5M)."""
    gen = current_state(settings)
    files = gen.files("catalog") if gen is not None else []
    counts = []
    for f in files:
        if storage.is_remote(f):
            seen = storage.read_parquet(f, columns=["last_seen_run"]).lazy()
        elif "last_seen_run" in pl.read_parquet_schema(f):
            seen = pl.scan_parquet(f).select("last_seen_run")
        else:  # an older version's state: no run recorded
            continue
        by_run = seen.group_by("last_seen_run").agg(pl.len().cast(pl.Int64).alias("skus"))
        counts.append(by_run.collect(engine="streaming"))
    if not counts:
        return pl.DataFrame(schema=STATE_SEEN_SCHEMA)
    frame = pl.concat(counts, how="vertical_relaxed").select(
        pl.col("last_seen_run").cast(pl.String), pl.col("skus").cast(pl.Int64)
    )
    return frame.group_by("last_seen_run").agg(pl.col("skus").sum()).sort("last_seen_run", nulls_last=True)


def read_llm_log(settings: Settings, summary: RunSummary, notes: list[str]) -> pl.DataFrame:
    """The LLM decision log's final answers of this run (empty when the LLM was off)."""
    path = settings.llm.store_location(settings.state_dir)  # llm.cache_url, llm.cache_path or the default
    if not summary.llm.enabled:
        return pl.DataFrame()
    try:
        log_frame = read_log(path, run_id=summary.run_id, final_only=True)
        if not log_frame.is_empty():
            return log_frame
        # logs written before the pipeline passed its run id: take the run's time window instead
        log_frame = read_log(path, final_only=True)
    except Exception as exc:  # noqa: BLE001 - a broken source must not stop the report
        notes.append(f"the LLM decision log {path} could not be read ({type(exc).__name__}: {exc})")
        return pl.DataFrame()
    if log_frame.is_empty() or "created_at" not in log_frame.columns:
        return log_frame
    start, end = summary.started_at, summary.finished_at
    stamp = pl.col("created_at").str.to_datetime(strict=False, time_zone="UTC")
    if start and end:
        lo = dt.datetime.fromisoformat(str(start)).astimezone(dt.UTC)
        hi = dt.datetime.fromisoformat(str(end)).astimezone(dt.UTC) + dt.timedelta(seconds=1)
        log_frame = log_frame.filter((stamp >= lo) & (stamp <= hi))
    return log_frame
