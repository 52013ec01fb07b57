"""The model folder: what `shelfwise train` writes besides the estimator, and how everyone reads it.

    <model_dir>/manifest.json              model and taxonomy versions (written by the model's `save`)
    <model_dir>/taxonomy/<file>            a copy of the taxonomy the model was trained on
    <model_dir>/taxonomy/source.json       its file name and format
    <model_dir>/taxonomy/aliases.json      after a taxonomy migration: the OLD paths each NEW node answers to

The night, the reports and the export read the model's taxonomy through `load_model_taxonomy`, so a
catalog that still names OLD paths finds their NEW nodes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from shelfwise.errors import ModelError
from taxonomy import Node, Taxonomy, load_taxonomy

__all__ = [
    "ALIASES_FILE",
    "MODEL_TAXONOMY_DIR",
    "copy_taxonomy",
    "has_model",
    "load_model_taxonomy",
    "model_versions",
    "with_aliases",
    "write_aliases",
]

MODEL_TAXONOMY_DIR = "taxonomy"
ALIASES_FILE = "aliases.json"


def has_model(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a trained model (its taxonomy copy is written last)."""
    return (Path(model_dir) / MODEL_TAXONOMY_DIR).exists()


def copy_taxonomy(taxonomy_path: Path, model_dir: Path, taxonomy_format: str | None) -> None:
    """Keep a copy of the taxonomy the model was trained on (``classify`` then needs none)."""
    dest = model_dir / MODEL_TAXONOMY_DIR
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(taxonomy_path, dest / taxonomy_path.name)
    (dest / "source.json").write_text(
        json.dumps({"file": taxonomy_path.name, "format": taxonomy_format, "original": str(taxonomy_path)})
    )


def load_model_taxonomy(model_dir: Path) -> Taxonomy:
    """The taxonomy ``model_dir`` was trained on, answering to the OLD paths of a migration too."""
    meta_path = model_dir / MODEL_TAXONOMY_DIR / "source.json"
    if not meta_path.exists():
        raise ModelError(
            f"model directory {model_dir} has no taxonomy ({meta_path} missing); "
            f"train a model first: shelfwise train --taxonomy T --catalog LABELLED --model-dir {model_dir}"
        )
    meta = json.loads(meta_path.read_text())
    tax = load_taxonomy(model_dir / MODEL_TAXONOMY_DIR / meta["file"], format=meta.get("format"))
    return with_aliases(model_dir / MODEL_TAXONOMY_DIR, tax)


def model_versions(model_dir: Path) -> tuple[str, str]:
    """``(model version, taxonomy version)`` from the model's manifest."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    return str(manifest.get("version", "")), str(manifest.get("taxonomy_version", ""))


def write_aliases(folder: Path, taxonomy_version: str, pairs: Sequence[tuple[str, str]]) -> int:
    """Record, for the model's taxonomy ``taxonomy_version``, the OLD path each NEW node id answers to
    (``(node id, OLD path)`` pairs: renamed, moved, merged nodes)."""
    path = folder / ALIASES_FILE
    tmp = path.with_suffix(".tmp")
    data = {"taxonomy_version": taxonomy_version, "aliases": [list(p) for p in pairs]}
    tmp.write_text(json.dumps(data, ensure_ascii=False))
    os.replace(tmp, path)
    return len(pairs)


def with_aliases(folder: Path, tax: Taxonomy) -> Taxonomy:
    """``tax`` that also finds the OLD paths of its nodes (``find_path``), if ``folder`` has an aliases file
    written for this very taxonomy version; ``tax`` unchanged otherwise."""
    path = folder / ALIASES_FILE
    if not path.exists():
        return tax
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("taxonomy_version") != tax.version:
        return tax
    layers: list[list[Node]] = []
    seen: Counter[str] = Counter()
    for node_id, old_path in data.get("aliases", []):
        if node_id not in tax:
            continue
        k = seen[node_id]
        seen[node_id] += 1
        if k == len(layers):
            layers.append([])
        layers[k].append(Node(node_id, old_path.rpartition(" > ")[2], None, old_path, 1, True))
    for k, nodes in enumerate(layers):
        tax = tax.with_names(Taxonomy(nodes, source=f"{path} (aliases {k + 1})"), lang=f"x-old{k + 1}")
    return tax
