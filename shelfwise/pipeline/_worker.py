"""What one shard task does, wherever it runs (a thread, a local process, a Dask worker on another host).

A task gets small, picklable inputs (:class:`ShardTask`: shard location, output location, model folder,
run id) plus the :class:`Settings` as data, and returns a :class:`ShardResult` that carries its own
counters. Heavy objects (model, embedder, LLM arbiter, the queue's human locks) are loaded once per
process, memoised by model folder + version + settings, and closed when the process exits
(:func:`release_resources` closes them earlier, e.g. when an in-process flow ends).

A task is idempotent: its output and counters are written atomically next to each other, and a task
that finds them (a Prefect retry, or a rerun after the main process was killed) returns them as they are.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from classifiers import open_embedding_cache
from shelfwise import storage
from shelfwise._memory import trim
from shelfwise._scores import score_part
from shelfwise.pipeline._classify import classify_frame
from shelfwise.pipeline._resources import llm_arbiter, worker_resources
from shelfwise.settings import Settings

__all__ = ["ShardResult", "ShardTask", "merge_counts", "run_shard", "score_distinct"]


class ShardTask(BaseModel):
    """One shard to classify (plain data: it travels to any worker)."""

    shard_url: str
    out_url: str
    model_dir: str
    run_id: str
    scores: list[str] = Field(default_factory=list)  # the night's score parts (shelfwise/_scores.py)


class ShardResult(BaseModel):
    """A classified shard: where its predictions are and what happened to its rows."""

    shard_url: str
    predictions_url: str
    seen: int = 0
    classified: int = 0
    human_locked: int = 0
    distinct_scored: int = 0
    routes: dict[str, int] = Field(default_factory=dict)
    llm: dict[str, int] = Field(default_factory=dict)
    llm_gated: int = 0
    llm_stats: dict[str, Any] = Field(default_factory=dict)
    embed_hits: int = 0
    embed_misses: int = 0
    embed_seconds: float = 0.0  # time inside the encoder (cache misses only)
    seconds: float = 0.0
    host: str = ""
    pid: int = 0


def _finished(task: ShardTask) -> ShardResult | None:
    """The result a finished attempt of ``task`` left (its output and counters), if there is one."""
    done = task.out_url + ".json"
    if storage.exists(done) and storage.exists(task.out_url):
        return ShardResult.model_validate_json(storage.read_bytes(done))
    return None


def _record(task: ShardTask, started: float, cache: Any, **counts: Any) -> ShardResult:
    """The task's result with its cache counters, where and how long it ran; written next to its output
    (after the output: a result file always names a whole output)."""
    result = ShardResult(
        shard_url=task.shard_url,
        predictions_url=task.out_url,
        embed_hits=cache.hits,
        embed_misses=cache.misses,
        embed_seconds=cache.encode_seconds,
        seconds=time.perf_counter() - started,
        host=socket.gethostname(),
        pid=os.getpid(),
        **counts,
    )
    storage.write_bytes(task.out_url + ".json", result.model_dump_json().encode())
    return result


def run_shard(task: ShardTask, settings: Settings) -> ShardResult:
    """Classify one staged shard into ``task.out_url`` (skipped when a finished result is already there)."""
    if (finished := _finished(task)) is not None:
        return finished
    started = time.perf_counter()
    shared = worker_resources(task.model_dir, settings)
    shard = storage.read_parquet(task.shard_url)
    # One cache connection and one LLM arbiter per task: their counters are this shard's own (budgets
    # and answers live in the arbiter's shared store, not in the object).
    arbiter, note = llm_arbiter(settings, shared.taxonomy)
    res = dataclasses.replace(shared, arbiter=arbiter, llm_note=note)
    try:
        with open_embedding_cache(settings.embedding_cache) as cache:
            preds, stats = classify_frame(shard, res, run_id=task.run_id, cache=cache, stored=task.scores)
        llm_stats = dataclasses.asdict(arbiter.stats) if arbiter is not None else {}
    finally:
        close = getattr(arbiter, "close", None)
        if close is not None:
            close()
    storage.write_parquet(preds, task.out_url)
    result = _record(
        task,
        started,
        cache,
        seen=stats.seen,
        classified=stats.classified,
        human_locked=stats.human_locked,
        distinct_scored=stats.distinct_scored,
        routes=dict(stats.routes),
        llm=dict(stats.llm),
        llm_gated=stats.llm_gated,
        llm_stats=llm_stats,
    )
    del shard, preds
    trim()
    return result


def score_distinct(task: ShardTask, settings: Settings) -> ShardResult:
    """Embed and score one shard of distinct contents (the night's step before the SKU shards) and write
    the scores to ``task.out_url`` (a score part, `shelfwise._scores`): the SKU shards, on any worker,
    take their scores from there. Idempotent like `run_shard`."""
    if (finished := _finished(task)) is not None:
        return finished
    started = time.perf_counter()
    res = worker_resources(task.model_dir, settings)
    rows = storage.read_parquet(task.shard_url)
    with open_embedding_cache(settings.embedding_cache) as cache:
        scored = score_part(rows, res, cache, task.out_url)  # written batch by batch: a kill keeps them
    return _record(task, started, cache, distinct_scored=scored)


def merge_counts(results: list[ShardResult]) -> dict[str, Any]:
    """Totals over shard results (plain counters, summed)."""
    routes: Counter[str] = Counter()
    llm: Counter[str] = Counter()
    llm_stats: dict[str, Any] = {}
    for r in results:
        routes.update(r.routes)
        llm.update(r.llm)
        for k, v in r.llm_stats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                llm_stats[k] = llm_stats.get(k, 0) + v
            else:
                llm_stats.setdefault(k, v)
    return {
        "seen": sum(r.seen for r in results),
        "classified": sum(r.classified for r in results),
        "human_locked": sum(r.human_locked for r in results),
        "distinct_scored": sum(r.distinct_scored for r in results),
        "routes": routes,
        "llm": llm,
        "llm_gated": sum(r.llm_gated for r in results),
        "embed_hits": sum(r.embed_hits for r in results),
        "embed_misses": sum(r.embed_misses for r in results),
        "llm_stats": llm_stats,
        "embed_seconds": sum(r.embed_seconds for r in results),
    }
