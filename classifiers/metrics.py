"""Evaluation of category predictions: accuracy, F1, hierarchy-aware scores, calibration, selective risk.

    evaluate(pred_paths, true_paths, confidences)   -> dict of figures and curves (JSON-serialisable)
    evaluate_files(predictions.parquet, truth)      -> the same, joined on sku_id; optional JSON + HTML
    write_evaluation_html(result, path)             -> self-contained page (reliability diagram,
                                                       risk-coverage)

Paths are compared level by level after normalising the separator (``"A > B"``, ``"A>B"`` and
``"A >> B"`` are the same path). "Coverage at 95% precision" is the largest share of items that can be
auto-accepted, taking the most confident first, while at least 95% of the accepted ones are right.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import f1_score

from shelfwise.errors import CatalogError

__all__ = [
    "coverage_at_precision",
    "ece_interval",
    "ece_sampling_floor",
    "evaluate",
    "evaluate_files",
    "expected_calibration_error",
    "risk_coverage",
    "split_path",
    "write_evaluation_html",
]

_SEP = re.compile(r"\s*>{1,2}\s*")
_PRECISIONS = (0.90, 0.95, 0.99)


def split_path(path: str | None) -> tuple[str, ...]:
    """Path levels with the separator normalised; ``()`` for a missing path."""
    if path is None:
        return ()
    text = str(path).strip().strip("[]\"'")
    if not text:
        return ()
    return tuple(p.strip() for p in _SEP.split(text) if p.strip())


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, *, n_bins: int = 15
) -> float:
    """ECE with equal-width bins: sum over bins of (bin share) * |accuracy - mean confidence|."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if len(c) == 0:
        return float("nan")
    bins = np.minimum((np.clip(c, 0, 1) * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(ok[m].mean() - c[m].mean())
    return float(ece)


def ece_sampling_floor(
    confidence: Sequence[float] | np.ndarray, *, n_bins: int = 15, draws: int = 200, seed: int = 0
) -> float:
    """The ECE a *perfectly calibrated* model would still show on these confidences, from sampling alone.

    Each draw sets correct ~ Bernoulli(confidence) and measures the ECE; the mean over ``draws`` is the
    noise floor of the estimate. On a few hundred items it is far from 0 (about 0.09 on 170 items with
    15 bins), so a measured ECE close to it says "calibrated as far as this test set can tell".
    """
    c = np.clip(np.asarray(confidence, dtype=np.float64).ravel(), 0.0, 1.0)
    if len(c) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    sims = rng.random((draws, len(c))) < c
    return float(np.mean([expected_calibration_error(c, sim, n_bins=n_bins) for sim in sims]))


def ece_interval(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    n_bins: int = 15,
    draws: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """95% bootstrap interval of the ECE (items resampled with replacement)."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if len(c) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(draws):
        idx = rng.integers(0, len(c), len(c))
        vals.append(expected_calibration_error(c[idx], ok[idx], n_bins=n_bins))
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


def _reliability(c: np.ndarray, ok: np.ndarray, n_bins: int = 15) -> dict[str, list[Any]]:
    bins = np.minimum((np.clip(c, 0, 1) * n_bins).astype(int), n_bins - 1)
    conf, acc, cnt = [], [], []
    for b in range(n_bins):
        m = bins == b
        cnt.append(int(m.sum()))
        conf.append(float(c[m].mean()) if m.any() else float("nan"))
        acc.append(float(ok[m].mean()) if m.any() else float("nan"))
    return {"bin_confidence": conf, "bin_accuracy": acc, "bin_count": cnt}


def risk_coverage(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) when accepting the k most confident items, k = 1..n (ties broken by input order)."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    order = np.argsort(-c, kind="stable")
    k = np.arange(1, len(c) + 1)
    risk = 1.0 - np.cumsum(ok[order]) / k
    return k / max(len(c), 1), risk


def coverage_at_precision(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, precision: float
) -> float:
    """Largest share of items accepted, most confident first, with precision >= ``precision``.

    A cut never splits a run of equal confidences (a threshold accepts all ties).
    """
    c = np.asarray(confidence, dtype=np.float64).ravel()
    if len(c) == 0:
        return 0.0
    order = np.argsort(-c, kind="stable")
    cs = c[order]
    coverage, risk = risk_coverage(c, correct)
    last_of_tie = np.r_[cs[1:] != cs[:-1], True]
    good = last_of_tie & (1.0 - risk >= precision - 1e-12)
    return float(coverage[np.flatnonzero(good).max()]) if good.any() else 0.0


def _prefixes(levels: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {levels[: i + 1] for i in range(len(levels))}


def evaluate(
    pred_paths: Sequence[str | None],
    true_paths: Sequence[str | None],
    confidences: Sequence[float] | np.ndarray,
    *,
    taxonomy: Any = None,
) -> dict[str, Any]:
    """All figures for predicted vs true category paths (see the module docstring).

    With ``taxonomy``, paths are first resolved to the taxonomy's spelling (``find_path``). Keys:
    ``n``, ``leaf_accuracy``, ``macro_f1``, ``weighted_f1``, ``per_level_accuracy``, ``hierarchical``
    (precision/recall/f1 over ancestor-augmented sets), ``ancestor_correct_rate`` (prediction is the
    truth or one of its ancestors), ``ece``, ``reliability``, ``coverage_at_precision`` ({"0.90": ...}),
    ``coverage_at_precision_hierarchical`` (correct = truth or ancestor), ``aurc``, ``risk_coverage``.
    """
    if not (len(pred_paths) == len(true_paths) == len(confidences)):
        raise ValueError(
            f"evaluate: lengths differ: {len(pred_paths)} predictions, {len(true_paths)} truths, "
            f"{len(confidences)} confidences"
        )

    def norm(p: str | None) -> tuple[str, ...]:
        if taxonomy is not None and p is not None:
            node = taxonomy.find_path(str(p))
            if node is not None:
                return split_path(node.path)
        return split_path(p)

    pred = [norm(p) for p in pred_paths]
    true = [norm(t) for t in true_paths]
    conf = np.asarray(confidences, dtype=np.float64)
    n = len(pred)
    if n == 0:
        raise ValueError("evaluate: no items to evaluate")
    exact = np.array([p == t for p, t in zip(pred, true, strict=True)])
    anc_ok = np.array([len(p) > 0 and t[: len(p)] == p for p, t in zip(pred, true, strict=True)])
    pj = [" > ".join(p) for p in pred]
    tj = [" > ".join(t) for t in true]
    max_depth = max(len(t) for t in true)
    per_level: dict[str, float] = {}
    for d in range(1, max_depth + 1):
        idx = [i for i, t in enumerate(true) if len(t) >= d]
        if idx:
            per_level[str(d)] = float(np.mean([pred[i][:d] == true[i][:d] for i in idx]))
    inter = sum(len(_prefixes(p) & _prefixes(t)) for p, t in zip(pred, true, strict=True))
    n_pred = sum(len(p) for p in pred)
    n_true = sum(len(t) for t in true)
    hp = inter / n_pred if n_pred else 0.0
    hr = inter / n_true if n_true else 0.0
    hf = 2 * hp * hr / (hp + hr) if hp + hr else 0.0
    coverage, risk = risk_coverage(conf, exact)
    step = max(1, n // 500)
    keep = np.r_[np.arange(0, n, step), n - 1] if n > 1 else np.array([0])
    return {
        "n": n,
        "leaf_accuracy": float(exact.mean()),
        "macro_f1": float(f1_score(tj, pj, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(tj, pj, average="weighted", zero_division=0)),
        "per_level_accuracy": per_level,
        "hierarchical": {"precision": hp, "recall": hr, "f1": hf},
        "ancestor_correct_rate": float(anc_ok.mean()),
        "mean_confidence": float(conf.mean()),
        "ece": expected_calibration_error(conf, exact),
        "ece_interval_95": list(ece_interval(conf, exact)),
        "ece_if_perfectly_calibrated": ece_sampling_floor(conf),
        "reliability": _reliability(conf, exact.astype(np.float64)),
        "coverage_at_precision": {f"{p:.2f}": coverage_at_precision(conf, exact, p) for p in _PRECISIONS},
        "coverage_at_precision_hierarchical": {
            f"{p:.2f}": coverage_at_precision(conf, anc_ok, p) for p in _PRECISIONS
        },
        "aurc": float(risk.mean()),
        "risk_coverage": {"coverage": coverage[keep].tolist(), "risk": risk[keep].tolist()},
    }


def _read_table(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise CatalogError(f"{what} file {path} does not exist; pass an existing file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=0)
        if suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(path)
    except Exception as exc:
        raise CatalogError(f"{what} file {path} cannot be read as {suffix[1:]}: {exc}") from exc
    raise CatalogError(f"{what} file {path}: unknown format {suffix!r}; use .parquet, .csv, .tsv or .jsonl")


def evaluate_files(
    predictions_path: str | Path,
    truth_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    taxonomy: Any = None,
) -> dict[str, Any]:
    """Evaluate a predictions Parquet (``sku_id, category_path, confidence``) against a catalog with
    ``sku_id, category_path`` (joined on sku_id; rows without a true path are left out and counted).

    With ``out_dir``, writes ``evaluation.json`` and ``evaluation.html`` there.
    """
    pred = _read_table(Path(predictions_path), "predictions")
    truth = _read_table(Path(truth_path), "truth")
    for frame, name, need in (
        (pred, predictions_path, ("sku_id", "category_path", "confidence")),
        (truth, truth_path, ("sku_id", "category_path")),
    ):
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise CatalogError(
                f"{name}: missing column(s) {missing} (has {frame.columns[:12]}); "
                "predictions come from shelfwise classify; the truth catalog needs sku_id and category_path"
            )
    pred = pred.select(
        pl.col("sku_id").cast(pl.String), "category_path", pl.col("confidence").cast(pl.Float64)
    )
    truth = truth.select(pl.col("sku_id").cast(pl.String), pl.col("category_path").alias("true_path")).unique(
        "sku_id", keep="first"
    )
    joined = pred.join(truth, on="sku_id", how="inner")
    unlabelled = int(joined.get_column("true_path").is_null().sum())
    joined = joined.filter(pl.col("true_path").is_not_null())
    if joined.is_empty():
        raise CatalogError(
            f"no sku_id of {predictions_path} has a category_path in {truth_path}; check that both files "
            "describe the same catalog"
        )
    result = evaluate(
        joined.get_column("category_path").to_list(),
        joined.get_column("true_path").to_list(),
        joined.get_column("confidence").fill_null(0.0).to_numpy(),
        taxonomy=taxonomy,
    )
    result["join"] = {
        "predictions": pred.height,
        "truth_rows": truth.height,
        "matched": joined.height,
        "matched_without_truth": unlabelled,
        "predictions_without_truth_row": pred.height - joined.height - unlabelled,
    }
    result["inputs"] = {"predictions": str(predictions_path), "truth": str(truth_path)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(result, indent=2, default=_json_default))
        write_evaluation_html(result, out / "evaluation.html")
    return result


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _reliability_png(result: dict[str, Any], plt: Any) -> str:
    """The reliability diagram, as base64 PNG."""
    rel = result["reliability"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    conf = np.array(rel["bin_confidence"], dtype=float)
    acc = np.array(rel["bin_accuracy"], dtype=float)
    ok = ~np.isnan(conf)
    width = 1.0 / len(conf)
    centers = (np.arange(len(conf)) + 0.5) * width
    ax.bar(centers[ok], acc[ok], width=width * 0.9, color="#4c78a8", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect calibration")
    ax.plot(conf[ok], acc[ok], "o", color="#e45756", ms=3, label="mean confidence")
    ax.set(
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability (ECE {result['ece']:.3f})",
    )
    ax.legend(loc="upper left", fontsize=8)
    png = _png(fig)
    plt.close(fig)
    return png


def _risk_coverage_png(result: dict[str, Any], plt: Any) -> str:
    """Precision of the accepted items against coverage, as base64 PNG."""
    rc = result["risk_coverage"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(rc["coverage"], 1 - np.asarray(rc["risk"]), color="#4c78a8")
    for p, style in ((0.95, "--"), (0.99, ":")):
        ax.axhline(p, ls=style, color="#999", lw=1)
    ax.set(
        xlabel="coverage (share auto-accepted)",
        ylabel="precision of accepted",
        xlim=(0, 1),
        ylim=(max(0.0, min(1 - np.asarray(rc["risk"])) - 0.05), 1.01),
        title=f"Precision vs coverage (AURC {result['aurc']:.3f})",
    )
    png = _png(fig)
    plt.close(fig)
    return png


def _headline_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) rows of the page's table."""
    cov = result["coverage_at_precision"]
    return [
        ("items", f"{result['n']:,}"),
        ("leaf accuracy", f"{result['leaf_accuracy']:.3f}"),
        ("macro F1 / weighted F1", f"{result['macro_f1']:.3f} / {result['weighted_f1']:.3f}"),
        ("hierarchical F1", f"{result['hierarchical']['f1']:.3f}"),
        ("ECE (15 bins)", f"{result['ece']:.3f}"),
        *(
            [
                (
                    "ECE 95% interval / a perfectly calibrated model's ECE on these items",
                    (
                        f"{result['ece_interval_95'][0]:.3f}-{result['ece_interval_95'][1]:.3f} / "
                        f"{result['ece_if_perfectly_calibrated']:.3f}"
                    ),
                )
            ]
            if "ece_interval_95" in result
            else []
        ),
        *[(f"coverage at {float(k):.0%} precision", f"{v:.3f}") for k, v in cov.items()],
        ("AURC", f"{result['aurc']:.4f}"),
        *[(f"accuracy at level {k}", f"{v:.3f}") for k, v in result["per_level_accuracy"].items()],
    ]


def write_evaluation_html(result: dict[str, Any], path: str | Path) -> Path:
    """One self-contained HTML page: headline figures, reliability diagram and risk-coverage curve."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel_png = _reliability_png(result, plt)
    rc_png = _risk_coverage_png(result, plt)
    rows = _headline_rows(result)
    table = "\n".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shelfwise evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:980px}}th{{text-align:left;padding-right:2rem}}
td{{font-variant-numeric:tabular-nums}}img{{max-width:46%;margin-right:2%}}</style></head>
<body><h1>Category prediction evaluation</h1>
<table>{table}</table>
<h2>Calibration and selective accuracy</h2>
<img alt="reliability diagram" src="data:image/png;base64,{rel_png}">
<img alt="precision against coverage" src="data:image/png;base64,{rc_png}">
<p>Coverage at P% precision: the share of items that can be auto-accepted, most confident first, while at
least P% of the accepted items are right.</p>
</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
