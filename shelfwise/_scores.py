"""Model scores per distinct content: computed once a night, shared by every shard task.

Rows whose `score_keys` are equal get the same model scores. The night's score step
(`shelfwise.pipeline.score_distinct`) scores each distinct content once and writes the scores as Parquet
parts next to the staged shards (``<work_url>/scores/``); a shard task then takes its rows' scores from
this process's memo or from those parts, and only asks the model for a content no part holds (a shard
run on its own). So every engine uses the very same numbers for a content, wherever its shard runs:
threads and Dask give the same predictions row for row.

Work kept across a kill: `score_part` scores a part's contents `SCORE_BATCH_ROWS` at a time and writes
each batch's scores as soon as they are computed (``<part>.batches/00000.parquet`` ...), next to the
embeddings the cache already stored batch by batch. A rerun of the task after a SIGKILL reads the
batches that are there and scores only the rest; the whole part is written once, then its batches go.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from classifiers import Prediction
from shelfwise import storage

__all__ = [
    "SCORE_BATCH_ROWS",
    "SCORE_MEMO_MAX",
    "forget_scores",
    "predict_distinct",
    "score_frame",
    "score_keys",
    "score_part",
]

#: Scores by content key, per model (object id, version) and top_k, for this process; bounded.
_SCORES: dict[tuple[int, str, int], dict[str, tuple[Any, ...]]] = {}
_SCORES_LOCK = threading.Lock()
SCORE_MEMO_MAX = 200_000
_KEY = "_score_key"
#: Distinct contents scored, then written, at a time inside a score task: what a kill can lose.
SCORE_BATCH_ROWS = 500


def forget_scores() -> None:
    """Drop this process's score memo (the night's scoring is over)."""
    with _SCORES_LOCK:
        _SCORES.clear()


def score_keys(frame: pl.DataFrame, model: Any) -> np.ndarray:
    """The key identical model scores share: ``content_hash`` (text fields, image, reviews), plus the price
    when the model scores it."""
    key_cols = ["content_hash"] + (
        ["price"] if getattr(model, "use_price", False) and "price" in frame.columns else []
    )
    return (
        frame.select(
            pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in key_cols], separator="|").alias(
                "_k"
            )
        )
        .get_column("_k")
        .to_numpy()
    )


def score_frame(keys: Sequence[str], pred: Any) -> pl.DataFrame:
    """A `Prediction` as a Parquet-ready frame, one row per key (2-D fields as list columns)."""
    data: dict[str, Any] = {_KEY: list(keys)}
    for f in dataclasses.fields(pred):
        data[f.name] = np.asarray(getattr(pred, f.name)).tolist()
    return pl.DataFrame(data)


def _rows_of(frame: pl.DataFrame) -> dict[str, tuple[Any, ...]]:
    names = [f.name for f in dataclasses.fields(Prediction)]
    cols = [frame.get_column(n).to_list() for n in names]
    keys = frame.get_column(_KEY).to_list()
    return {
        str(k): tuple(np.asarray(c[i]) if isinstance(c[i], list) else c[i] for c in cols)
        for i, k in enumerate(keys)
    }


def _read_stored(parts: Sequence[str], keys: list[str]) -> dict[str, tuple[Any, ...]]:
    """The stored scores of ``keys`` from the night's score parts (those that exist)."""
    if not parts or not keys:
        return {}
    want = pl.Series(_KEY, keys, dtype=pl.String)
    found: list[pl.DataFrame] = []
    local = [p for p in parts if not storage.is_remote(p)]
    present = [p for p in local if storage.exists(p)]
    if present:
        found.append(pl.scan_parquet(present).filter(pl.col(_KEY).is_in(want)).collect())
    for url in (p for p in parts if storage.is_remote(p)):
        if storage.exists(url):
            found.append(storage.read_parquet(url).filter(pl.col(_KEY).is_in(want)))
    found = [f for f in found if f.height]
    return _rows_of(pl.concat(found, how="vertical_relaxed")) if found else {}


def predict_distinct(
    rows: pl.DataFrame, res: Any, cache: Any, *, stored: Sequence[str] = ()
) -> tuple[Any, int]:
    """Model scores for every row of ``rows``: from this process's memo, else from the night's stored
    score parts (``stored``), else from the model (once per distinct key). Returns the prediction and
    how many keys the model scored now."""
    s = res.settings
    keys = score_keys(rows, res.model)
    memo_key = (id(res.model), str(res.model.version), int(s.top_k))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    distinct = [str(k) for k in keys[first].tolist()]
    with _SCORES_LOCK:  # take what the memo knows now (another task may clear it while we score)
        memo = _SCORES.setdefault(memo_key, {})
        known = {k: memo[k] for k in distinct if k in memo}
    fresh = _read_stored(stored, [k for k in distinct if k not in known])
    have = known.keys() | fresh.keys()
    todo = sorted(i for i, k in zip(first.tolist(), distinct, strict=True) if k not in have)
    if todo:
        pred = res.model.predict(
            rows[todo],
            embedder=res.embedder,
            cache=cache,
            image_embedder=res.image_embedder,
            top_k=s.top_k,
        )
        fresh |= _rows_of(score_frame([str(keys[i]) for i in todo], pred))
    if fresh:
        with _SCORES_LOCK:
            if len(memo) + len(fresh) > SCORE_MEMO_MAX:
                memo.clear()
            memo.update(fresh)
    lookup = known | fresh
    table = [lookup[k] for k in distinct]
    names = [f.name for f in dataclasses.fields(Prediction)]
    spread = {n: np.asarray([r[j] for r in table])[inverse.reshape(-1)] for j, n in enumerate(names)}
    return Prediction(**spread), len(todo)


def _batch_url(out_url: str, index: int) -> str:
    return storage.join(out_url + ".batches", f"{index:05d}.parquet")


def score_part(rows: pl.DataFrame, res: Any, cache: Any, out_url: str) -> int:
    """Score ``rows`` (distinct contents) into the score part ``out_url``, `SCORE_BATCH_ROWS` at a time.

    Each batch's scores are written as soon as they are computed; a batch already written (by an attempt
    that was killed) is read back instead of scored again. The part is written whole at the end and the
    batch files are removed. Returns how many contents the model scored in this call."""
    if storage.exists(out_url):  # written whole (atomically) by an attempt killed before it returned
        return 0
    keys = [str(k) for k in score_keys(rows, res.model).tolist()]
    frames: list[pl.DataFrame] = []
    scored = 0
    for index, start in enumerate(range(0, rows.height, SCORE_BATCH_ROWS)):
        url = _batch_url(out_url, index)
        if storage.exists(url):
            frames.append(storage.read_parquet(url))
            continue
        batch = rows.slice(start, SCORE_BATCH_ROWS)
        pred, n = predict_distinct(batch, res, cache)
        frame = score_frame(keys[start : start + batch.height], pred)
        storage.write_parquet(frame, url)
        frames.append(frame)
        scored += n
    whole = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame({_KEY: keys})
    storage.write_parquet(whole, out_url)
    storage.remove_tree(out_url + ".batches")
    return scored
