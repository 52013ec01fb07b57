"""`CategoryModel` on disk, split out of model.py: a model folder holds ``model.joblib`` (the options and
the fitted state, format `MODEL_FORMAT_VERSION`) and ``manifest.json`` (what a person reads about it).

    write_model_folder   write both files (the state atomically)
    read_model_state     the options and fitted state of a model folder, with errors that say what to do
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import joblib

from classifiers.hierarchy import NodeIndex
from shelfwise.errors import ModelError

__all__ = ["MODEL_FORMAT_VERSION", "read_model_state", "write_model_folder"]

MODEL_FORMAT_VERSION = 2  # 2: leaf contract, thresholds with a precision bound
_STATE_FILE = "model.joblib"
#: Modules a model file saved before they moved into `classifiers._model` names (pickle looks them up).
_MOVED = {f"classifiers._model_{m}": f"classifiers._model.{m}" for m in ("accept", "bank", "proof", "rerank")}
_MANIFEST_FILE = "manifest.json"


def write_model_folder(
    model_dir: str | Path,
    *,
    params: dict[str, Any],
    fitted: dict[str, Any],
    index: NodeIndex,
    manifest: dict[str, Any],
) -> Path:
    """Write ``model.joblib`` (``params``, ``fitted`` with ``index_`` as plain state) and
    ``manifest.json`` into ``model_dir`` (created if needed)."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    fitted = {**fitted, "index_": index.to_state()}  # a copy: the model keeps its NodeIndex
    state = {"format": MODEL_FORMAT_VERSION, "params": params, "fitted": fitted}
    tmp = d / (_STATE_FILE + ".tmp")
    joblib.dump(state, tmp, compress=3)
    tmp.replace(d / _STATE_FILE)
    (d / _MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    return d


def read_model_state(model_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor options, fitted attributes) of a folder written by `write_model_folder`."""
    d = Path(model_dir)
    state_path = d / _STATE_FILE
    if not state_path.is_file():
        raise ModelError(
            f"no trained model at {d} ({_STATE_FILE} missing); train one: "
            f"shelfwise train --taxonomy T --catalog LABELLED --model-dir {d}"
        )
    for old, new in _MOVED.items():  # models saved before the move still load
        sys.modules.setdefault(old, importlib.import_module(new))
    try:
        state = joblib.load(state_path)
    except Exception as exc:  # corrupt or foreign file
        raise ModelError(
            f"model file {state_path} cannot be read ({exc}); retrain with shelfwise train"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT_VERSION:
        raise ModelError(
            f"model {state_path} has format {state.get('format') if isinstance(state, dict) else '?'}, "
            f"this shelfwise reads format {MODEL_FORMAT_VERSION}; retrain with shelfwise train"
        )
    params = dict(state["params"])
    params.setdefault("use_price", False)  # models saved before the price scorer existed
    fitted = dict(state["fitted"])
    fitted["index_"] = NodeIndex.from_state(fitted["index_"])
    return params, fitted
