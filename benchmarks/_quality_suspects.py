"""``benchmarks/quality.py --disjoint``: the suspect route on planted misfilings, against cleanlab.

On the disjoint test part of a catalog (classified by a model trained as `shelfwise train` does), a share
of the rows get a wrong current category (drawn at random among the other trained categories); the
rest keep their true one. The model's answers do not depend on the current category, so one
classification serves every rate and seed: only routing is replayed, with `verification.routing.route`
and the same inputs the night gives it (the top-k candidates, the confidence and bar of each answer).
cleanlab's ``find_label_issues`` (default ``prune_by_noise_rate``) reads the same model's label
probabilities of those rows with the planted labels. Precision, recall and F1 count the planted rows
only (a row whose catalog category was already wrong counts against both).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from verification.routing import MAX_CURRENT_SUPPORT, paths_agree, route

RATES = (0.04, 0.08, 0.15)
SEEDS = (0, 1, 2)


def _scores(hit: np.ndarray, planted: np.ndarray) -> dict[str, float]:
    tp = int((hit & planted).sum())
    prec = tp / hit.sum() if hit.any() else 0.0
    rec = tp / planted.sum() if planted.any() else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": round(prec, 3), "recall": round(rec, 3), "f1": round(f1, 3)}


def _support(candidates: list[list[dict[str, Any]]], current: list[str]) -> np.ndarray:
    """As the night computes it: the best candidate score on the current category's branch."""
    return np.array(
        [
            max((c["score"] for c in cands if paths_agree(c["category_path"], cur)), default=0.0)
            for cands, cur in zip(candidates, current, strict=True)
        ]
    )


def _rules(inputs: dict[str, Any], current: list[str], bars: np.ndarray) -> dict[str, np.ndarray]:
    """Which rows each suspect rule flags: shelfwise's (`route` with its defaults, plus a proven back-off
    answer on another branch, as `shelfwise._decide.decide` does) and the rule before issue 22 (the
    auto bar or 0.5, whichever is higher, and 5% current support)."""
    support = _support(inputs["candidates"], current)
    routing = route(inputs["confidence"], bars, inputs["predicted"], current, current_support=support)
    flagged = np.array([r == "suspect" for r in routing.route])
    pairs = zip(inputs["confident"], current, strict=True)
    backoff_off = np.array([c is not None and not paths_agree(c, cur) for c, cur in pairs])
    ours = flagged | (backoff_off & (support <= MAX_CURRENT_SUPPORT))
    old = route(
        inputs["confidence"],
        bars,
        inputs["predicted"],
        current,
        suspect_thresholds=np.maximum(bars, 0.5),
        current_support=support,
        max_current_support=0.05,
    )
    before = np.array([r == "suspect" for r in old.route]) | (backoff_off & (support <= 0.05))
    return {"shelfwise": ours, "before issue 22": before}


def suspects_on_planted(state: Path, truth: np.ndarray) -> dict[str, Any]:
    """Suspect precision / recall / F1 of shelfwise's route and of cleanlab on planted misfilings.

    ``state``: the disjoint run's folder (``predictions.parquet``, ``test_proba.npz``, ``model``);
    ``truth``: the true category path of each prediction row (in the predictions' order).
    """
    from cleanlab.filter import find_label_issues

    from classifiers.model import CategoryModel

    pred = pl.read_parquet(state / "predictions.parquet")
    npz = np.load(state / "test_proba.npz", allow_pickle=True)
    order = {s: i for i, s in enumerate(npz["sku_id"].tolist())}
    proba = npz["proba"][[order[s] for s in pred["sku_id"].to_list()]]
    paths = npz["paths"].tolist()
    col = {p: i for i, p in enumerate(paths)}
    keep = np.array([t in col for t in truth])  # rows whose true category is a trained one
    y = np.array([col.get(t, -1) for t in truth])
    bars = CategoryModel.load(state / "model").thresholds_.for_nodes(pred["category_id"].to_list())
    inputs = {
        "candidates": pred["candidates"].to_list(),
        "confidence": pred["confidence"].to_numpy(),
        "predicted": pred["category_path"].to_list(),
        "confident": pred["confident_category_path"].to_list(),
    }
    out: dict[str, Any] = {"rows": int(keep.sum()), "seeds": len(SEEDS), "rates": {}}
    for rate in RATES:
        runs: dict[str, list[dict[str, float]]] = {}
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            planted = keep & (rng.uniform(size=len(y)) < rate)
            labels = y.copy()
            shift = rng.integers(1, len(paths), size=len(y))
            labels[planted] = (y[planted] + shift[planted]) % len(paths)
            current = [paths[j] if j >= 0 else t for j, t in zip(labels, truth, strict=True)]
            for name, hit in _rules(inputs, current, bars).items():
                runs.setdefault(name, []).append(_scores(hit & keep, planted))
            issues = np.zeros(len(y), dtype=bool)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too few examples in class ..." on small test parts
                issues[np.flatnonzero(keep)] = find_label_issues(labels[keep], proba[keep])
            runs.setdefault("cleanlab find_label_issues", []).append(_scores(issues, planted))
        out["rates"][f"{rate:.2f}"] = {name: _mean(r) for name, r in runs.items()}
    return out


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in runs])), 3) for k in runs[0]}


def suspects_markdown(results: dict[str, Any]) -> str:
    """One row per catalog, rate and method: precision, recall, F1 (mean over the seeds)."""
    lines = [
        "| catalog | planted rate | method | precision | recall | F1 |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        for rate, methods in (r.get("suspects") or {}).get("rates", {}).items():
            for method, m in methods.items():
                scores = f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f}"
                lines.append(f"| {name} | {rate} | {method} | {scores} |")
    return "\n".join(lines)
