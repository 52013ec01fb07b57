"""How noisy the disjoint figures are, and what the proof's levers give out of fold (issue 22).

    python benchmarks/_quality_noise.py STATE_ROOT [--catalog amazon_uk] [--out FILE]

``STATE_ROOT`` is a ``quality.py --disjoint`` work folder (``<root>/<catalog>/predictions.parquet``,
``oof.npz``, ``model/``). Two parts, both read only:

    bootstrap     the test rows resampled with replacement (model and routes fixed): auto share, the
                  best-cut share at 96% (chosen with the labels) and their ratio; then random halves:
                  the best cut chosen on one half, its share and precision on the other
    levers        per state folder, the leaf proof's proven share (and the share left after the exclusion
                  rule) under levers fixed in advance: grid step, start rule, leaf delta; out-of-fold
                  rows only, never the test rows
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _quality_disjoint import Catalog

from classifiers.calibration import fit_threshold
from classifiers.model import CategoryModel
from classifiers.selective import CutSequence, best_cut_share, fit_thresholds, fixed_sequence_test

SEED = 20261207
TARGET = 0.95

#: name -> (cut sequence, or a start share of the rows; leaf delta). Fixed before any figure was read.
LEVERS: dict[str, tuple[CutSequence | float, float]] = {
    "in force: start 1,148 rows (margin 1 pt), 1% steps, leaf delta 0.03": (CutSequence(), 0.03),
    "steps 0.5%": (CutSequence(step_share=0.005), 0.03),
    "steps 2%": (CutSequence(step_share=0.02), 0.03),
    "start margin 0.5 pt": (CutSequence(start_margin=0.005), 0.03),
    "start at 300 rows": (CutSequence(start_margin=1.0, min_start_rows=300), 0.03),
    "start at 10% of rows": (0.10, 0.03),
    "start at 20% of rows": (0.20, 0.03),
    "start at 30% of rows": (0.30, 0.03),
    "leaf delta 0.035 (back-off 0.015)": (CutSequence(), 0.035),
    "leaf delta 0.04 (back-off 0.01)": (CutSequence(), 0.04),
    "leaf delta 0.025 (back-off 0.025)": (CutSequence(), 0.025),
}


def _q(x: Any) -> dict[str, float]:
    a = np.asarray(x, dtype=np.float64)
    return {
        "mean": round(float(np.nanmean(a)), 4),
        "sd": round(float(np.nanstd(a)), 4),
        **{f"p{p}": round(float(np.nanpercentile(a, p)), 4) for p in (2.5, 5, 25, 50, 75, 95, 97.5)},
    }


def test_rows(state: Path, catalog: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exactly right, routed auto, confidence) per classified test row, truth resolved as training does."""
    cat = Catalog.load(catalog)
    path_of = dict(zip(cat.frame["sku_id"].to_list(), cat.paths, strict=True))
    pred = pl.read_parquet(state / "predictions.parquet")
    truth = [cat.resolved(path_of[s]) for s in pred["sku_id"].to_list()]
    exact = np.asarray(pred["category_path"].to_list(), dtype=object) == np.asarray(truth, dtype=object)
    auto = np.asarray(pred["route"].to_list(), dtype=object) == "auto"
    return exact, auto, pred["confidence"].to_numpy().astype(np.float64)


def bootstrap(exact: np.ndarray, auto: np.ndarray, conf: np.ndarray, *, draws: int = 1000) -> dict[str, Any]:
    """The ratio's noise with model and routes fixed, and a best cut chosen on the rows it is read on."""
    rng = np.random.default_rng(SEED)
    n = len(exact)
    at96, share, ratio = [], [], []
    for _ in range(draws):
        i = rng.integers(0, n, n)
        b = best_cut_share(conf[i], exact[i], 0.96)
        at96.append(b)
        share.append(auto[i].mean())
        ratio.append(auto[i].mean() / b if b else np.nan)
    ins, outs, prec = [], [], []
    for _ in range(draws):
        p = rng.permutation(n)
        a, b = p[: n // 2], p[n // 2 :]
        fit = fit_threshold(conf[a], exact[a], target_precision=0.96, delta=None)
        acc = conf[b] >= fit.threshold
        ins.append(fit.coverage)
        outs.append(acc.mean())
        prec.append(exact[b][acc].mean() if acc.any() else np.nan)
    r = np.asarray(ratio)
    observed96 = best_cut_share(conf, exact, 0.96)
    return {
        "rows": n,
        "draws": draws,
        "seed": SEED,
        "observed": {
            "auto_share": round(float(auto.mean()), 4),
            "best_cut_share_96": round(observed96, 4),
            "ratio": round(float(auto.mean()) / observed96, 3),
        },
        "best_cut_share_96": _q(at96),
        "auto_share": _q(share),
        "ratio": _q(r),
        "draws_with_ratio_at_least_0.85": round(float((r >= 0.85).mean()), 3),
        "half_split": {
            "best_cut_share_96_on_the_half_it_was_chosen_on": _q(ins),
            "share_on_the_other_half": _q(outs),
            "precision_on_the_other_half": _q(prec),
            "halves_below_0.96": round(float((np.asarray(prec) < 0.96).mean()), 3),
        },
    }


def levers(state: Path) -> dict[str, Any]:
    """Each lever's proven leaf share out of fold (before / after the exclusion rule), confidence ranking."""
    oof = np.load(state / "oof.npz")
    model = CategoryModel.load(state / "model")
    p_raw, y = oof["p_raw"], oof["y"]
    top = p_raw.argmax(axis=1)
    ok, s, n = top == y, p_raw.max(axis=1), len(y)  # isotonic: the raw top score is what is proven
    labels = np.array(model.index_.ids, dtype=object)[model.label_pos_][top]
    out: dict[str, Any] = {"rows": n, "best_cut_share_96": round(best_cut_share(s, ok, 0.96), 4)}
    for name, (seq, delta) in LEVERS.items():
        if not isinstance(seq, CutSequence):
            seq = CutSequence(start_margin=1.0, min_start_rows=max(59, math.ceil(seq * n)))
        fit = fixed_sequence_test(s, ok, target_precision=TARGET, delta=delta, sequence=seq)
        th = fit_thresholds(s, ok, labels, target_precision=TARGET, delta=delta, sequence=seq)
        out[name] = {
            "start_rows": int(seq.sizes(n, target_precision=TARGET)[0]),
            "proven_share": round(fit.fit.coverage, 4),
            "after_exclusion": round(float((s >= th.for_nodes(labels)).mean()), 4),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--catalog", default="amazon_uk")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    res: dict[str, Any] = {"bootstrap": bootstrap(*test_rows(args.root / args.catalog, args.catalog))}
    res["levers_out_of_fold"] = {
        d.name: levers(d) for d in sorted(args.root.iterdir()) if (d / "oof.npz").exists()
    }
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
