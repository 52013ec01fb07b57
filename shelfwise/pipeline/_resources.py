"""What classifying needs, loaded once per process: the model, its taxonomy, the encoders, the embedding
cache, the reviewers' locks and the audit's bars (`Resources`).

`worker_resources` memoises them by model folder + version + settings, so every task a process runs
(a thread of the flow, a Dask worker) shares one model; `release_resources` closes and forgets them once
the process's scoring is over. A shard task builds its own LLM arbiter (`llm_arbiter`): its counters are
that shard's own.
"""

from __future__ import annotations

import atexit
import gc
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from classifiers import make_embedder, open_embedding_cache
from classifiers.images import ImageEmbedder
from classifiers.llm import LLMArbiter
from classifiers.model import CategoryModel
from shelfwise._memory import trim
from shelfwise._scores import forget_scores
from shelfwise.errors import ModelError
from shelfwise.model_folder import has_model, load_model_taxonomy
from shelfwise.settings import Settings
from shelfwise.state import read_queue
from verification.audit_bar import STATE_FILE as AUDIT_BAR_FILE
from verification.audit_bar import AuditBars, audit_answers, load_bars, next_bars, save_bars

__all__ = [
    "ModelCard",
    "Resources",
    "image_embedder",
    "llm_arbiter",
    "llm_note",
    "load_resources",
    "model_card",
    "release_resources",
    "worker_resources",
]

_LOCK = threading.Lock()
_MEMO: dict[tuple[str, str, str], Resources] = {}


@dataclass
class Resources:
    """Everything expensive a run needs, built once (lazily, never at import)."""

    settings: Settings
    model_dir: Path
    model: Any
    taxonomy: Any
    embedder: Any
    cache: Any
    image_embedder: Any = None
    arbiter: Any = None
    locked: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    llm_note: str = ""
    audit_bars: AuditBars | None = None  # bars the audit raised for this model


@dataclass(frozen=True)
class ModelCard:
    """What staging needs to know of a model, read from its folder without loading it: its version,
    whether it scores price (the content key then includes it), its taxonomy, and the reviewers' locks."""

    version: str
    use_price: bool
    taxonomy: Any
    locked: dict[str, tuple[str, str, str]]


def model_card(model_dir: str | Path, settings: Settings) -> ModelCard:
    """The `ModelCard` of ``model_dir`` (the main process stages with it; only scoring loads the model)."""
    model_dir = Path(model_dir)
    if not has_model(model_dir) or not (model_dir / "manifest.json").exists():
        raise ModelError(
            f"no trained model in {model_dir}; run: shelfwise train --taxonomy T --catalog LABELLED "
            f"--model-dir {model_dir}"
        )
    manifest = json.loads((model_dir / "manifest.json").read_text())
    locked: dict[str, tuple[str, str, str]] = {}
    store = read_queue(settings)
    if store is not None:
        with store:
            locked = store.locked()
    return ModelCard(
        version=str(manifest.get("version", "")),
        use_price=bool((manifest.get("params") or {}).get("use_price", False)),
        taxonomy=load_model_taxonomy(model_dir),
        locked=locked,
    )


def image_embedder(settings: Settings) -> ImageEmbedder | None:
    """The photo encoder when the settings use images (else ``None``)."""
    return ImageEmbedder() if settings.use_images else None


def llm_note(settings: Settings) -> str:
    """One line on whether the LLM step is on, for the run summary."""
    llm = settings.llm
    if not llm.base_url:
        return (
            "LLM step off: no endpoint configured (set OPENAI_BASE_URL or --llm-base-url); gated items "
            "go to review"
        )
    return f"LLM step on: {llm.model} at {llm.base_url}"


def llm_arbiter(settings: Settings, tax: Any) -> tuple[LLMArbiter | None, str]:
    """An LLM arbiter on the settings' endpoint (``None`` when the step is off), and the run's note."""
    llm = settings.llm
    if not llm.base_url:
        return None, llm_note(settings)
    return LLMArbiter(llm, tax, store_path=llm.store_location(settings.state_dir)), llm_note(settings)


def load_resources(
    model_dir: str | Path, settings: Settings, *, with_queue: bool = True, with_llm: bool = True
) -> Resources:
    """Load what classifying needs (``with_llm=False``: no arbiter; a shard task builds its own)."""
    model_dir = Path(model_dir)
    if not has_model(model_dir):
        raise ModelError(
            f"no trained model in {model_dir}; run: shelfwise train --taxonomy T --catalog LABELLED "
            f"--model-dir {model_dir}"
        )
    tax = load_model_taxonomy(model_dir)
    model = CategoryModel.load(model_dir)
    embedder = make_embedder(settings.embedder)
    cache = open_embedding_cache(settings.embedding_cache)
    images = image_embedder(settings) if getattr(model, "use_images", False) else None
    arbiter, note = llm_arbiter(settings, tax) if with_llm else (None, llm_note(settings))
    locked: dict[str, tuple[str, str, str]] = {}
    decisions = None
    store = read_queue(settings) if with_queue else None
    if store is not None:
        try:
            locked = store.locked()
            decisions = store.decisions_frame()
        finally:
            store.close()
    bars = _audit_bars(settings, model.version, decisions)
    return Resources(settings, model_dir, model, tax, embedder, cache, images, arbiter, locked, note, bars)


def _audit_bars(settings: Settings, model_version: str, decisions: pl.DataFrame | None) -> AuditBars:
    """The audit-raised bars for this run: last run's state, raised where the audit answers so far
    prove the model's auto-accepts below target (idempotent: the same answers give the same bars)."""
    path = settings.state_dir / AUDIT_BAR_FILE
    bars = load_bars(path, model_version)
    if decisions is None:
        return bars
    answers = audit_answers(decisions, model_version=model_version)
    bars = next_bars(bars, answers, target=settings.target_precision, model_version=model_version)
    if bars.floors or path.exists():
        save_bars(path, bars)
    return bars


def _model_version(model_dir: Path) -> str:
    manifest = model_dir / "manifest.json"
    if manifest.exists():
        return str(json.loads(manifest.read_text()).get("version", ""))
    return str(model_dir.stat().st_mtime_ns) if model_dir.exists() else ""


def worker_resources(model_dir: str | Path, settings: Settings) -> Resources:
    """This process's `Resources` for ``model_dir`` (loaded on first use, then reused by every task)."""
    path = Path(model_dir).resolve()
    key = (str(path), _model_version(path), settings.model_dump_json(exclude={"llm": {"api_key"}}))
    with _LOCK:
        res = _MEMO.get(key)
        if res is None:
            res = load_resources(path, settings, with_llm=False)
            _MEMO[key] = res
        return res


def release_resources() -> None:
    """Close what this process's memo opened (embedding cache, LLM arbiter), forget it and the score
    memo, and hand the freed memory back (the night's finish and report then run without the model)."""
    with _LOCK:
        items = list(_MEMO.values())
        _MEMO.clear()
    forget_scores()
    for res in items:
        for obj in (res.cache, res.arbiter):
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001, S110 - closing must never hide the run's own outcome
                    pass
    del items
    gc.collect()
    trim()


atexit.register(release_resources)
