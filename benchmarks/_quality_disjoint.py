"""``benchmarks/quality.py --disjoint``: train exactly as `shelfwise train` does on 80% of each shared
catalog, classify the disjoint 20%; realized auto share and exact precision. Run it through quality.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _quality_correctness import correctness_comparison
from _quality_data import BENCH, DATA, _ancestor_ok, _baseline_predict, _write, fmt, load_dataset, split
from _quality_suspects import suspects_markdown, suspects_on_planted

from classifiers.metrics import evaluate
from classifiers.selective import best_cut_share


def disjoint(name: str, *, workdir: Path, target: float = 0.95, rescore: bool = False) -> dict[str, Any]:
    """Train exactly as `shelfwise train` does on one part of a catalog; classify a disjoint part.

    Both go through the CLI's own functions (`shelfwise.pipeline.train` / `classify_catalog`, default
    settings except the state folder), on catalog files written from the fixed split (`split`: the
    fit part = train + calibration, 80%; the test part = 20%). The test catalog has no
    ``category_path`` (so routing cannot see the truth); the truth is joined back by ``sku_id``.
    Reported on the test part: auto share, exact precision of ``auto`` rows with its Clopper-Pearson
    95% interval, top-1 accuracy, the back-off columns, and the TF-IDF+SVM baseline's coverage at 95%
    precision with an oracle threshold chosen on this same test part. ``rescore``: reuse the model and
    predictions of an earlier run in ``workdir`` (only the figures are recomputed).
    """
    import shutil

    from scipy.stats import binomtest

    from classifiers.calibration import precision_lower_bound
    from shelfwise import night, pipeline
    from shelfwise.settings import Settings

    frame, tax, fields = load_dataset(name)
    paths = frame.get_column("category_path").to_list()
    fit_a, cal_a, test_idx = split(paths)
    fit_idx = np.concatenate([fit_a, cal_a])
    taxes = DATA / "taxonomies"
    tax_file = {
        "amazon_uk": "amazon_uk_categories.txt",
        "flipkart": "flipkart_categories.txt",
        "womens_clothing": "womens_clothing_categories.txt",
    }[name]
    keep = [c for c in ("sku_id", *fields, "category_path") if c in frame.columns]
    state = workdir / name
    train_file = state / "train.parquet"
    test_file = state / "test.parquet"
    rescore = rescore and (state / "predictions.parquet").exists()
    if not rescore:
        shutil.rmtree(state, ignore_errors=True)
        (state / "cache").mkdir(parents=True, exist_ok=True)
        shared_cache = BENCH / "embeddings.sqlite"
        if shared_cache.exists():
            (state / "cache" / "embeddings.sqlite").symlink_to(shared_cache)
        frame[fit_idx].select(keep).write_parquet(train_file)
        frame[test_idx].select([c for c in keep if c != "category_path"]).write_parquet(test_file)
    settings = Settings(state_dir=state, target_precision=target)
    out = state / "predictions.parquet"
    t0 = time.perf_counter()
    if not rescore:
        with _dump_out_of_fold(state / "oof.npz"):
            pipeline.train(
                taxonomy_path=taxes / tax_file,
                catalog=train_file,
                model_dir=state / "model",
                settings=settings,
            )
    t_fit = time.perf_counter() - t0
    if not rescore:
        night.classify_catalog(
            model_dir=state / "model", catalog=test_file, out=out, settings=settings, enqueue=False
        )
        _dump_test_proba(state, test_file, settings)
    fit_report = json.loads((state / "model" / "manifest.json").read_text())["fit_report"]
    pred = pl.read_parquet(out)

    def resolved(p: str) -> str:  # the label as training resolves it (cut to the deepest known prefix)
        node = tax.find_path(p) or tax.deepest_known(p)
        return node.path if node is not None else p

    truth_of = {
        sku: resolved(p)
        for sku, p in zip(
            frame[test_idx]["sku_id"].to_list(), frame[test_idx]["category_path"].to_list(), strict=True
        )
    }
    truth = np.asarray([truth_of[s] for s in pred["sku_id"].to_list()], dtype=object)
    got = np.asarray(pred["category_path"].to_list(), dtype=object)
    exact = got == truth
    auto = np.asarray(pred["route"].to_list(), dtype=object) == "auto"
    k, m = int(exact[auto].sum()), int(auto.sum())
    ci = binomtest(k, m).proportion_ci(method="exact", confidence_level=0.95) if m else None
    conf_paths = pred["confident_category_path"].to_list()
    has_conf = np.asarray([c is not None for c in conf_paths])
    conf_ok = _ancestor_ok([c or "" for c in conf_paths], list(truth), tax) & has_conf
    b_paths, b_conf = _baseline_predict(frame, fields, fit_idx, test_idx, paths)
    base = evaluate(b_paths, [paths[i] for i in test_idx], b_conf)
    conf = pred["confidence"].to_numpy()
    best = {
        f"{p:.2f}": round(best_cut_share(conf, exact, p), 4) for p in (target, target + 0.01, target + 0.02)
    }
    at96 = best[f"{target + 0.01:.2f}"]
    return {
        "split": "seeded stratified 80/20 (train+calibration parts of `split` -> test part); rare classes "
        "(<3 rows) train only",
        "train_rows": len(fit_idx),
        "test_rows": len(test_idx),
        "seconds_train": None if rescore else round(t_fit, 1),
        "target_precision": target,
        "auto_share": round(m / len(exact), 4),
        "auto_rows": m,
        "auto_exact_precision": round(k / m, 4) if m else None,
        "auto_exact_precision_ci95": [round(ci.low, 4), round(ci.high, 4)] if ci else None,
        "auto_exact_precision_lower_bound_one_sided": round(precision_lower_bound(k, m), 4) if m else None,
        "best_cut_share": best,
        "auto_over_best_cut_plus_1pt": round(m / len(exact) / at96, 3) if at96 else None,
        "top1_accuracy": round(float(exact.mean()), 4),
        "confident_share": round(float(has_conf.mean()), 4),
        "confident_precision_ancestor_ok": round(float(conf_ok[has_conf].mean()), 4)
        if has_conf.any()
        else None,
        "train_out_of_fold": fit_report.get("heldout", {}),
        "suspects": suspects_on_planted(state, truth),
        "correctness_score": correctness_comparison(state, target=target),
        "baseline_top1_accuracy": round(base["leaf_accuracy"], 4),
        "baseline_oracle_coverage_at_95": round(base["coverage_at_precision"]["0.95"], 4),
    }


@contextlib.contextmanager
def _dump_out_of_fold(path: Path) -> Iterator[None]:
    """While training, save the out-of-fold arrays the proof reads, and the base scorers' out-of-fold
    scores (``<stem>_scorers.npz``, for the correctness score's per-scorer agreement); benchmarks only."""
    import classifiers.model as cm

    real, real_stackers = cm.fit_model_thresholds, cm.fit_stackers

    def spy(oof: Any, **kw: Any) -> Any:
        np.savez_compressed(path, p_raw=oof.p_raw, p_cal_cf=oof.p_cal_cf, y=oof.y, label_pos=kw["label_pos"])
        return real(oof, **kw)

    def spy_stackers(oof: dict[str, np.ndarray], y: np.ndarray, **kw: Any) -> Any:
        np.savez_compressed(path.with_name(path.stem + "_scorers.npz"), **oof)
        return real_stackers(oof, y, **kw)

    cm.fit_model_thresholds = spy  # type: ignore[assignment]
    cm.fit_stackers = spy_stackers  # type: ignore[assignment]
    try:
        yield
    finally:
        cm.fit_model_thresholds = real  # type: ignore[assignment]
        cm.fit_stackers = real_stackers  # type: ignore[assignment]


def _dump_test_proba(state: Path, test_file: Path, settings: Any) -> None:
    """The trained model's label probabilities of the test rows (for the suspect benchmark)."""
    from classifiers import EmbeddingCache, make_embedder
    from classifiers.model import CategoryModel

    model = CategoryModel.load(state / "model")
    frame = pl.read_parquet(test_file)
    with EmbeddingCache(state / "cache" / "embeddings.sqlite") as cache:
        proba = model.predict_label_proba(frame, embedder=make_embedder(settings.embedder), cache=cache)
    np.savez_compressed(
        state / "test_proba.npz",
        proba=proba,
        sku_id=np.asarray(frame["sku_id"].to_list(), dtype=object),
        classes=np.asarray(model.classes_, dtype=object),
        paths=np.asarray([model.index_.paths[p] for p in model.label_pos_], dtype=object),
    )


def disjoint_markdown(results: dict[str, Any]) -> str:
    """The realized table (test part), the out-of-fold table (`train`'s figures) and the suspects'."""
    lines = [
        (
            "| catalog | test rows | auto share | exact precision of auto rows (95% CI) | one-sided 95% "
            "lower bound | best-cut share at 95% / 96% / 97% (chosen with the labels) | auto share / "
            "best-cut share at 96% | top-1 accuracy | TF-IDF+SVM top-1 | back-off answer share "
            "(ancestor-correct) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ci = r["auto_exact_precision_ci95"]
        prec = (
            "-"
            if r["auto_exact_precision"] is None
            else f"{r['auto_exact_precision']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        )
        best = r.get("best_cut_share") or {}
        lines.append(
            f"| {name} | {r['test_rows']} | {r['auto_share']:.3f} | {prec} | "
            f"{fmt(r['auto_exact_precision_lower_bound_one_sided'])} | "
            f"{' / '.join(fmt(v) for v in best.values()) or '-'} | "
            f"{fmt(r.get('auto_over_best_cut_plus_1pt'))} | "
            f"{r['top1_accuracy']:.3f} | {r['baseline_top1_accuracy']:.3f} | "
            f"{r['confident_share']:.3f} ({fmt(r['confident_precision_ancestor_ok'])}) |"
        )
    lines += [
        "",
        (
            "| catalog (out of fold, `train`) | rows | proven share | its precision (lower bound) | "
            "best-cut share at 95% / 96% | proven / best-cut at 96% | excluded categories | back-off "
            "share of all rows | information gain, leaf only / with back-off |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        h = r.get("train_out_of_fold") or {}
        if "proven_share" not in h:
            continue
        b = h.get("backoff") or {}
        lines.append(
            f"| {name} | {h['rows']} | {h['proven_share']:.3f} | {fmt(h['proven_precision'])} "
            f"({fmt(h['proven_precision_lower_bound'])}) | {fmt(h['best_cut_share_at_target'])} / "
            f"{fmt(h['best_cut_share_at_target_plus_1pt'])} | {fmt(h['proven_over_best_cut_plus_1pt'])} | "
            f"{h['excluded_categories']} | {fmt(b.get('share_of_all_rows'))} | "
            f"{fmt(b.get('information_gain_leaf_only'))} / {fmt(b.get('information_gain_with_backoff'))} |"
        )
    return "\n".join([*lines, "", suspects_markdown(results)])


def run(args: argparse.Namespace) -> int:
    """The ``--disjoint`` mode of quality.py's command line (``--datasets``, ``--out``, ``--table``,
    ``--rescore``)."""
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    block = dict(results.get("disjoint", {}))
    if args.table:
        print(disjoint_markdown(block))
        return 0
    for name in args.datasets:
        seconds = (block.get(name) or {}).get("seconds_train")
        block[name] = disjoint(name, workdir=BENCH / "disjoint", rescore=args.rescore)
        if block[name]["seconds_train"] is None:
            block[name]["seconds_train"] = seconds
        print(f"{name}: {block[name]}", flush=True)
        results["disjoint"] = block
        _write(out_path, results)
    print(disjoint_markdown(block))
    return 0
