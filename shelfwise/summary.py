"""The typed run summary: written once by ``finish_night`` as ``runs/<run_id>/summary.json``, read by the
CLI, the Prefect artifact and the reports, and rendered in one place (:meth:`RunSummary.rows`).

The JSON keeps the keys older readers use (``counts``, ``llm``, ``embedding``, ``enqueue``, ...); new
figures are new fields (``incremental``, ``engine``, ``shards``, ``seconds``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.errors import ConfigError

__all__ = ["QUEUES", "EmbeddingCounts", "Engine", "Incremental", "LLMSummary", "RunCounts", "RunSummary"]

#: The verification queues, in the order summaries list them.
QUEUES: tuple[str, ...] = ("low_confidence", "suspect", "llm_failed", "audit")


class RunCounts(BaseModel):
    """SKU counts of one run. ``seen`` = classified + quarantined; ``carried + rescored = classified``."""

    model_config = ConfigDict(extra="allow")

    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    classified: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    auto: int = 0
    review: int = 0
    suspect: int = 0
    human_locked: int = 0
    queued: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    carried: int = 0
    rescored: int = 0
    distinct_scored: int = 0


class Incremental(BaseModel):
    """Why tonight re-scored what it did: ``full`` (everything) or ``incremental`` (only new/changed SKUs)."""

    mode: Literal["full", "incremental"] = "full"
    reason: str = ""
    carried: int = 0
    rescored: int = 0
    new: int = 0


class LLMSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    enabled: bool = False
    note: str = ""
    gated: int = 0
    statuses: dict[str, int] = Field(default_factory=dict)


class EmbeddingCounts(BaseModel):
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0  # time inside the encoder, summed over shard tasks (cache misses only)
    distinct_contents: int = 0  # distinct contents among tonight's rows to score (embedded/scored once)
    score_step_seconds: float = 0.0  # wall time of the distinct-content step (embed + score, all workers)

    @property
    def rate(self) -> float:
        """Texts encoded per second of encoder time (per worker thread/process)."""
        return self.misses / self.seconds if self.seconds else 0.0


class Engine(BaseModel):
    """Where the shard tasks ran."""

    runner: Literal["inline", "threads", "dask"] = "inline"
    workers: int = 1
    address: str | None = None
    processes: list[int] = Field(default_factory=list)  # ids of the processes that ran shard tasks

    def describe(self) -> str:
        if self.runner == "dask":
            return (
                f"Dask at {self.address}" if self.address else f"local Dask cluster, {self.workers} processes"
            )
        if self.runner == "threads":
            return f"{self.workers} threads"
        return "in-process"


class RunSummary(BaseModel):
    """What one nightly run did (``runs/<run_id>/summary.json``)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    started_at: str
    finished_at: str
    catalog: str
    taxonomy_version: str
    model_version: str
    model_dir: str
    counts: RunCounts = Field(default_factory=RunCounts)
    enqueue: dict[str, Any] = Field(default_factory=dict)
    llm: LLMSummary = Field(default_factory=LLMSummary)
    embedding: EmbeddingCounts = Field(default_factory=EmbeddingCounts)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    predictions_path: str
    quarantine_path: str | None = None
    previous_run_id: str | None = None
    report: str | None = None
    incremental: Incremental = Field(default_factory=Incremental)
    engine: Engine = Field(default_factory=Engine)
    shards: int = 0
    seconds: float = 0.0
    # transient errors ridden out by retrying, per kind: queue_db (queue database transactions run
    # again), storage (object-store reads and writes); counted in the process that finished the night
    retries: dict[str, int] = Field(default_factory=dict)
    # a taxonomy migration's block (pipeline.finish_migration); absent from the JSON on ordinary nights
    taxonomy_change: dict[str, Any] | None = None

    # -- files -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> RunSummary:
        """Read a ``summary.json`` (a clear error names the file when it is missing or not valid)."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path} does not exist; is the run finished?") from exc
        except ValueError as exc:
            raise ConfigError(f"{path}: not a valid run summary ({exc})") from exc

    def write(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/summary.json`` atomically (readers never see half a file)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(self.model_dump_json(indent=2, exclude=self._unset_blocks()))
        os.replace(tmp, run_dir / "summary.json")
        return run_dir / "summary.json"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (what ``summary.json`` holds)."""
        data: dict[str, Any] = json.loads(self.model_dump_json(exclude=self._unset_blocks()))
        return data

    def _unset_blocks(self) -> set[str]:
        """Optional blocks absent from the JSON when empty (readers test for the key, not for null)."""
        return {"taxonomy_change"} if self.taxonomy_change is None else set()

    def __getitem__(self, key: str) -> Any:
        """Mapping access for readers not yet moved to attributes (``summary["counts"]``): a JSON copy."""
        return self.as_dict()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        """Add or replace a top-level entry (kept in summary.json on the next `write`)."""
        setattr(self, key, value)

    # -- the one rendering -------------------------------------------------------------------------
    @property
    def superseded(self) -> int:
        return int(sum((self.enqueue.get("superseded") or {}).values()))

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (item, value) rows: the CLI table and the Markdown artifact both print these."""
        c = self.counts
        q = {name: c.queued.get(name, 0) for name in QUEUES}
        inc = self.incremental
        rows = [
            ("seen", str(c.seen)),
            ("new / changed / unchanged", f"{c.new} / {c.changed} / {c.unchanged}"),
            ("classified", str(c.classified)),
            (f"scoring: {inc.mode}", inc.reason),
            ("carried (unchanged, kept last prediction)", str(c.carried)),
            ("re-scored / distinct contents scored", f"{c.rescored} / {c.distinct_scored}"),
            ("quarantined", str(c.quarantined)),
            ("auto-accepted", str(c.auto)),
            ("review (low confidence)", str(c.review)),
            ("suspect (current category disagrees)", str(c.suspect)),
            ("kept human decisions", str(c.human_locked)),
            ("queued: " + " / ".join(QUEUES), " / ".join(str(q[name]) for name in QUEUES)),
        ]
        dropped = self.enqueue.get("dropped_over_capacity") or {}
        if sum(dropped.values()):
            rows.append(("not queued (over nightly capacity)", str(sum(dropped.values()))))
        if self.superseded:
            rows.append(("stale queue items closed (now auto-accepted)", str(self.superseded)))
        rows += [
            ("LLM gated items", str(self.llm.gated)),
            ("embeddings computed / from cache", f"{self.embedding.misses} / {self.embedding.hits}"),
            (
                "encoder time / texts per encoder-second",
                f"{self.embedding.seconds:.1f} s / {self.embedding.rate:.0f}",
            ),
            ("engine", f"{self.engine.describe()}, {self.shards} shards"),
            (
                "retried after transient errors: queue database / object store",
                f"{self.retries.get('queue_db', 0)} / {self.retries.get('storage', 0)}",
            ),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        return rows

    def notes(self) -> list[str]:
        """Lines printed under the table: LLM state, quarantine reasons, where the files are."""
        c = self.counts
        lines = [self.llm.note] if self.llm.note else []
        if c.quarantine_reasons:
            reasons = ", ".join(f"{k}: {v}" for k, v in c.quarantine_reasons.items())
            lines.append(f"quarantine reasons: {reasons} (rows with reasons in {self.quarantine_path})")
        lines.append(f"predictions: {self.predictions_path}")
        if self.report:
            lines.append(f"report: {self.report}")
        lines.append(f"taxonomy {self.taxonomy_version}, model {self.model_version}")
        return lines

    def markdown(self) -> str:
        """The Prefect artifact / report form of :meth:`rows` and :meth:`notes`."""
        out = [f"# shelfwise run `{self.run_id}`", "", "| items | count |", "|---|---:|"]
        out += [f"| {name} | {value} |" for name, value in self.rows()]
        out += [""] + [line + "  " for line in self.notes()]
        return "\n".join(out)
