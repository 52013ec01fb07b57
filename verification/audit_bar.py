"""The audit closes the loop: raise the auto-accept bar of a scope the audit proves below target.

Each night a random sample of auto-accepted items goes to the ``audit`` queue. When the reviewers'
answers on the current model show, at 95% confidence (one-sided Clopper-Pearson upper bound below the
target), that auto-accepted precision is below the target, overall (scope ``"*"``) or in a top-level
branch (scope = its name), the next run raises that scope's bar: a minimum confidence, the lowest one
at which the audited items above it are on target (``inf`` when there is none).
The bar only rises while the model stays the same; `shelfwise train` (a new model) resets it.

    answers = audit_answers(store.decisions_frame(), model_version=model.version)
    bars = next_bars(load_bars(path, model.version), answers, target=0.95, model_version=model.version)
    save_bars(path, bars)
    floor = bars.floor_for(paths)        # per item: max(overall bar, its branch's bar)

Pure functions on frames and arrays; the pipeline reads and writes the state file in the state dir.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import binomtest

__all__ = [
    "ALL",
    "STATE_FILE",
    "AuditBars",
    "audit_answers",
    "load_bars",
    "next_bars",
    "reset_bars",
    "save_bars",
]

#: Scope key of the overall bar.
ALL = "*"
#: File (in the state dir) holding the current bars.
STATE_FILE = "audit_bar.json"
_ANSWER_KINDS = ("accept", "choose")


def _upper_bound(k: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson upper bound of k / n."""
    return float(binomtest(k, n).proportion_ci(method="exact", confidence_level=1.0 - 2.0 * delta).high)


def _branch(path: str | None) -> str:
    return str(path).split(">")[0].strip() if path else ""


@dataclass
class AuditBars:
    """Minimum confidences per scope (``"*"`` and top-level branches) on top of the model's thresholds."""

    model_version: str | None = None
    floors: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    raised: list[str] = field(default_factory=list)  # scopes raised by the last update

    def floor_for(self, paths: Sequence[str | None]) -> np.ndarray:
        """Each item's extra bar: the larger of the overall one and its top-level branch's (0 = none)."""
        overall = self.floors.get(ALL, 0.0)
        return np.array([max(overall, self.floors.get(_branch(p), 0.0)) for p in paths], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "floors": {k: ("inf" if math.isinf(v) else v) for k, v in self.floors.items()},
            "evidence": self.evidence,
            "raised": list(self.raised),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditBars:
        return cls(
            model_version=data.get("model_version"),
            floors={
                k: (math.inf if v == "inf" else float(v)) for k, v in dict(data.get("floors", {})).items()
            },
            evidence=dict(data.get("evidence", {})),
            raised=list(data.get("raised", [])),
        )

    def headline(self) -> str:
        """One sentence for the governance report ("" when no bar is raised)."""
        if not self.floors:
            return ""
        parts = []
        for scope, floor in sorted(self.floors.items()):
            name = "all products" if scope == ALL else f"branch {scope!r}"
            ev = self.evidence.get(scope, {})
            what = "auto-accept stopped" if math.isinf(floor) else f"minimum confidence {floor:.3f}"
            seen = (
                f" (audit: {ev['correct']}/{ev['answers']} right, upper bound {ev['upper_bound']:.3f})"
                if ev
                else ""
            )
            parts.append(f"{name}: {what}{seen}")
        return "Auto-accept bar raised by the audit: " + "; ".join(parts) + ". Retraining resets it."


def audit_answers(decisions: pl.DataFrame, *, model_version: str | None = None) -> pl.DataFrame:
    """Final reviewer answers on ``audit`` items: ``shown_confidence``, ``shown_category_path``, ``correct``.

    ``correct``: the reviewer kept exactly the shown category (an exact judgement). Only answers on
    items of ``model_version`` count when it is given.
    """
    empty = pl.DataFrame(
        schema={"shown_confidence": pl.Float64, "shown_category_path": pl.String, "correct": pl.Boolean}
    )
    need = {"queue", "kind", "final", "shown_confidence", "shown_category_path"}
    if decisions.is_empty() or not need <= set(decisions.columns):
        return empty
    d = decisions.filter(
        (pl.col("queue") == "audit")
        & pl.col("kind").is_in(_ANSWER_KINDS)
        & pl.col("final").fill_null(False)
        & pl.col("shown_confidence").is_not_null()
    )
    if model_version is not None and "model_version" in d.columns:
        d = d.filter(pl.col("model_version") == model_version)
    if d.is_empty():
        return empty
    chosen_path = (
        pl.coalesce("category_path", "shown_category_path") if "category_path" in d.columns else None
    )
    if "shown_category_id" in d.columns and "category_id" in d.columns:
        same = (
            pl.when(pl.col("shown_category_id").is_not_null() & pl.col("category_id").is_not_null())
            .then(pl.col("category_id") == pl.col("shown_category_id"))
            .otherwise(chosen_path == pl.col("shown_category_path") if chosen_path is not None else False)
        )
    else:
        same = chosen_path == pl.col("shown_category_path") if chosen_path is not None else pl.lit(False)
    d = d.with_columns(
        pl.when(pl.col("kind") == "accept").then(True).otherwise(same).fill_null(False).alias("correct")
    )
    return d.select(pl.col("shown_confidence").cast(pl.Float64), "shown_category_path", "correct")


def _raise(
    conf: np.ndarray, ok: np.ndarray, floor: np.ndarray, *, target: float, delta: float, min_answers: int
) -> tuple[float, dict[str, Any]] | None:
    """New bar for one scope, or None when its audit (answers above their bar ``floor``) does not prove
    precision below target. The new bar is the lowest confidence above which the audited items are
    on target (``inf`` when there is none)."""
    keep = conf >= floor
    n = int(keep.sum())
    if n < min_answers:
        return None
    k = int(ok[keep].sum())
    ub = _upper_bound(k, n, delta)
    evidence = {
        "answers": n,
        "correct": k,
        "precision": round(k / n, 4),
        "upper_bound": round(ub, 4),
        "previous_floor": float(floor.max()) if len(floor) else 0.0,
    }
    if ub >= target:
        return None
    for c in np.unique(conf[keep]):  # lowest first: the smallest raise the audit agrees with
        sel = conf >= np.maximum(floor, c)
        if c > 0 and sel.any() and ok[sel].mean() >= target:
            return float(c), evidence
    return math.inf, evidence


def next_bars(
    previous: AuditBars,
    answers: pl.DataFrame,
    *,
    target: float,
    model_version: str | None,
    delta: float = 0.05,
    min_answers: int = 10,
) -> AuditBars:
    """The bars for the next run: a scope whose audited precision (items above their current bar) is
    provably below ``target`` gets a higher bar; others keep theirs. Branches are judged first, then all
    products with the branches' bars in force. A new model starts from none."""
    same = previous.model_version == model_version
    floors = dict(previous.floors) if same else {}
    evidence = dict(previous.evidence) if same else {}
    raised: list[str] = []
    if not answers.is_empty():
        conf = answers.get_column("shown_confidence").to_numpy().astype(np.float64)
        ok = answers.get_column("correct").to_numpy().astype(bool)
        branch = np.array(
            [_branch(p) for p in answers.get_column("shown_category_path").to_list()], dtype=object
        )

        def floor_of(rows: np.ndarray) -> np.ndarray:
            overall = floors.get(ALL, 0.0)
            return np.array([max(overall, floors.get(b, 0.0)) for b in branch[rows]], dtype=np.float64)

        scopes = [(b, branch == b) for b in sorted(set(branch)) if b] + [
            (ALL, np.ones(len(conf), dtype=bool))
        ]
        for scope, mask in scopes:
            rows = np.flatnonzero(mask)
            got = _raise(
                conf[rows], ok[rows], floor_of(rows), target=target, delta=delta, min_answers=min_answers
            )
            if got is not None:
                floors[scope], evidence[scope] = max(got[0], floors.get(scope, 0.0)), got[1]
                raised.append(scope)
    if not raised and same:
        raised = list(previous.raised)
    return AuditBars(model_version=model_version, floors=floors, evidence=evidence, raised=raised)


def load_bars(path: str | Path, model_version: str | None = None) -> AuditBars:
    """The bars in ``path`` (none when the file is missing or belongs to another model)."""
    p = Path(path)
    if not p.is_file():
        return AuditBars(model_version=model_version)
    bars = AuditBars.from_dict(json.loads(p.read_text()))
    if model_version is not None and bars.model_version != model_version:
        return AuditBars(model_version=model_version)
    return bars


def save_bars(path: str | Path, bars: AuditBars) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(bars.to_dict(), indent=2))
    os.replace(tmp, p)


def reset_bars(path: str | Path) -> None:
    """Forget every raised bar (``shelfwise train`` calls this: a new model is judged afresh)."""
    Path(path).unlink(missing_ok=True)
