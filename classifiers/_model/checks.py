"""`CategoryModel`'s option and input checks, split out of model.py (messages name the option, the
allowed values, the bad value and the fix).

    check_params           every option, before ``fit`` does anything
    check_enough_classes   at least two categories among the resolvable labelled rows
"""

from __future__ import annotations

from typing import Any

from classifiers._model.correctness import check_rankings
from classifiers._model.text import TEXT_FIELDS
from shelfwise.errors import ConfigError

__all__ = ["CALIBRATIONS", "HIERARCHY", "STACKERS", "check_enough_classes", "check_params"]

CALIBRATIONS = ("temperature", "isotonic", "none")
HIERARCHY = ("backoff", "leaf")
STACKERS = ("auto", "rerank", "weighted", "mean")


def check_enough_classes(
    classes: list[str], labels: list[str], taxonomy: Any, unresolvable_examples: list[str]
) -> None:
    if len(classes) < 2:
        raise ConfigError(
            f"training needs labelled rows in at least 2 categories of taxonomy "
            f"{getattr(taxonomy, 'source', '')}; "
            f"got {len(classes)} category from {len(labels)} resolvable rows "
            f"(unresolvable examples: {unresolvable_examples[:3]})"
        )


def check_params(model: Any) -> None:
    """Raise a `ConfigError` for the first option of ``model`` (a `CategoryModel`) that is not valid."""
    if model.calibration not in CALIBRATIONS:
        raise ConfigError(
            f"CategoryModel calibration={model.calibration!r} is not valid; use one of "
            f"{', '.join(CALIBRATIONS)}"
        )
    if model.hierarchy not in HIERARCHY:
        raise ConfigError(
            f"CategoryModel hierarchy={model.hierarchy!r} is not valid; use 'backoff' or 'leaf'"
        )
    if model.stacker not in STACKERS:
        raise ConfigError(
            f"CategoryModel stacker={model.stacker!r} is not valid; use one of {', '.join(STACKERS)}"
        )
    if not (model.use_tfidf or model.use_embeddings):
        raise ConfigError("CategoryModel needs use_tfidf=True or use_embeddings=True (both are off)")
    unknown = [f for f in model.text_fields if f not in TEXT_FIELDS]
    if unknown or not model.text_fields:
        raise ConfigError(
            f"CategoryModel text_fields={tuple(model.text_fields)!r}: unknown {unknown}; "
            f"choose from {', '.join(TEXT_FIELDS)}"
        )
    if not 0.5 <= float(model.target_precision) <= 1.0:
        raise ConfigError(f"target_precision must be in [0.5, 1], got {model.target_precision!r}")
    if int(model.cv) < 2:
        raise ConfigError(f"cv must be >= 2, got {model.cv!r}")
    if int(model.k_neighbors) < 1:
        raise ConfigError(f"k_neighbors must be >= 1, got {model.k_neighbors!r}")
    check_rankings(model.rankings)
