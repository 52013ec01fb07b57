"""``benchmarks/quality.py --disjoint``: train exactly as `shelfwise train` does on 80% of each shared
catalog, classify the disjoint 20%; realized auto share and exact precision. For the small catalogs
(``--all-folds``) also every product once, over 5 folds, pooled. Run it through quality.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _quality_correctness import confidence_only_auto, correctness_comparison, kept_ranking_scores
from _quality_data import (
    BENCH,
    DATA,
    SEED,
    ancestor_ok,
    baseline_predict,
    fmt,
    load_dataset,
    split,
    write_results,
)
from _quality_suspects import suspects_markdown, suspects_on_planted

from classifiers.metrics import evaluate
from classifiers.selective import best_cut_share

_TAXONOMY_FILES = {
    "amazon_uk": "amazon_uk_categories.txt",
    "flipkart": "flipkart_categories.txt",
    "womens_clothing": "womens_clothing_categories.txt",
}


@dataclass(frozen=True)
class Catalog:
    """One shared catalog as the benchmark reads it: rows, taxonomy, text fields, true paths."""

    name: str
    frame: pl.DataFrame
    tax: Any
    fields: tuple[str, ...]
    paths: list[str]

    @classmethod
    def load(cls, name: str) -> Catalog:
        frame, tax, fields = load_dataset(name)
        return cls(name, frame, tax, fields, frame.get_column("category_path").to_list())

    def resolved(self, p: str) -> str:
        """The label as training resolves it (cut to the deepest known prefix)."""
        node = self.tax.find_path(p) or self.tax.deepest_known(p)
        return node.path if node is not None else p


@dataclass(frozen=True)
class Outcome:
    """Per classified test row: exactly right, routed auto, its confidence, and its back-off answer
    (has one, the truth lies under it)."""

    exact: np.ndarray
    auto: np.ndarray
    confidence: np.ndarray
    has_conf: np.ndarray
    conf_ok: np.ndarray

    @staticmethod
    def concat(parts: list[Outcome]) -> Outcome:
        return Outcome(
            *(np.concatenate([getattr(o, f) for o in parts]) for f in Outcome.__dataclass_fields__)
        )


def _prepare(cat: Catalog, state: Path, fit_idx: np.ndarray, test_idx: np.ndarray) -> None:
    """A fresh state folder with the train catalog (labelled) and the test catalog (no category_path)."""
    import shutil

    keep = [c for c in ("sku_id", *cat.fields, "category_path") if c in cat.frame.columns]
    shutil.rmtree(state, ignore_errors=True)
    (state / "cache").mkdir(parents=True, exist_ok=True)
    shared_cache = BENCH / "embeddings.sqlite"
    if shared_cache.exists():
        (state / "cache" / "embeddings.sqlite").symlink_to(shared_cache)
    cat.frame[fit_idx].select(keep).write_parquet(state / "train.parquet")
    cat.frame[test_idx].select([c for c in keep if c != "category_path"]).write_parquet(
        state / "test.parquet"
    )


_DEFAULT_RANKINGS = ("confidence",)


def _train_and_classify(cat: Catalog, state: Path, target: float, rankings: tuple[str, ...]) -> float:
    """`shelfwise train` on the train catalog, then `shelfwise classify` of the test one, through the
    CLI's own functions (default settings except the state folder and ``rankings``); the training
    seconds."""
    from shelfwise import night, pipeline
    from shelfwise.settings import Settings

    settings = Settings(state_dir=state, target_precision=target, rankings=list(rankings))
    t0 = time.perf_counter()
    with _dump_out_of_fold(state / "oof.npz"):
        pipeline.train(
            taxonomy_path=DATA / "taxonomies" / _TAXONOMY_FILES[cat.name],
            catalog=state / "train.parquet",
            model_dir=state / "model",
            settings=settings,
        )
    seconds = time.perf_counter() - t0
    night.classify_catalog(
        model_dir=state / "model",
        catalog=state / "test.parquet",
        out=state / "predictions.parquet",
        settings=settings,
        enqueue=False,
    )
    _dump_test_proba(state, state / "test.parquet", settings)
    return seconds


def _outcome(cat: Catalog, state: Path, test_idx: np.ndarray) -> tuple[Outcome, np.ndarray]:
    """The test rows' outcome (in the predictions' order) and their true paths."""
    pred = pl.read_parquet(state / "predictions.parquet")
    skus = cat.frame[test_idx]["sku_id"].to_list()
    truth_of = {sku: cat.resolved(cat.paths[i]) for sku, i in zip(skus, test_idx, strict=True)}
    truth = np.asarray([truth_of[s] for s in pred["sku_id"].to_list()], dtype=object)
    got = np.asarray(pred["category_path"].to_list(), dtype=object)
    conf_paths = pred["confident_category_path"].to_list()
    has_conf = np.asarray([c is not None for c in conf_paths])
    conf_ok = ancestor_ok([c or "" for c in conf_paths], list(truth), cat.tax) & has_conf
    auto = np.asarray(pred["route"].to_list(), dtype=object) == "auto"
    return Outcome(got == truth, auto, pred["confidence"].to_numpy(), has_conf, conf_ok), truth


def realized_figures(o: Outcome, target: float) -> dict[str, Any]:
    """Auto share, exact precision of auto rows (Clopper-Pearson 95% interval, one-sided 95% lower
    bound), the best-cut shares (an oracle chosen with these labels), top-1 accuracy, back-off answers."""
    from scipy.stats import binomtest

    from classifiers.calibration import precision_lower_bound

    k, m = int(o.exact[o.auto].sum()), int(o.auto.sum())
    ci = binomtest(k, m).proportion_ci(method="exact", confidence_level=0.95) if m else None
    best = {
        f"{p:.2f}": round(best_cut_share(o.confidence, o.exact, p), 4)
        for p in (target, target + 0.01, target + 0.02)
    }
    at96 = best[f"{target + 0.01:.2f}"]
    return {
        "test_rows": len(o.exact),
        "target_precision": target,
        "auto_share": round(m / len(o.exact), 4),
        "auto_rows": m,
        "auto_exact_precision": round(k / m, 4) if m else None,
        "auto_exact_precision_ci95": [round(ci.low, 4), round(ci.high, 4)] if ci else None,
        "auto_exact_precision_lower_bound_one_sided": round(precision_lower_bound(k, m), 4) if m else None,
        "best_cut_share": best,
        "auto_over_best_cut_plus_1pt": round(m / len(o.exact) / at96, 3) if at96 else None,
        "top1_accuracy": round(float(o.exact.mean()), 4),
        "confident_share": round(float(o.has_conf.mean()), 4),
        "confident_precision_ancestor_ok": round(float(o.conf_ok[o.has_conf].mean()), 4)
        if o.has_conf.any()
        else None,
    }


def _best_cuts(scores: np.ndarray, exact: np.ndarray, target: float) -> dict[str, float]:
    cuts = (target, target + 0.01, target + 0.02)
    return {f"{p:.2f}": round(best_cut_share(scores, exact, p), 4) for p in cuts}


def _rankings_figures(
    state: Path, outcome: Outcome, target: float, rankings: tuple[str, ...]
) -> dict[str, Any]:
    """With rankings beyond the default: the leaf ranking `train` kept, each ranking's proven share out of
    fold, and the realized figures of the default (confidence alone) from the same trained model."""
    if tuple(rankings) == _DEFAULT_RANKINGS:
        return {}
    heldout = json.loads((state / "model" / "manifest.json").read_text())["fit_report"]["heldout"]
    off = dataclasses.replace(outcome, auto=confidence_only_auto(state))
    kept = kept_ranking_scores(state, outcome.confidence)
    return {
        "rankings": list(rankings),
        "best_cut_share_of_the_kept_ranking": _best_cuts(kept, outcome.exact, target),
        "ranking_kept": heldout.get("ranking"),
        "rankings_compared": heldout.get("rankings_compared"),
        "confidence_only": realized_figures(off, target),
    }


def disjoint(
    name: str,
    *,
    workdir: Path,
    target: float = 0.95,
    rescore: bool = False,
    rankings: tuple[str, ...] = _DEFAULT_RANKINGS,
) -> dict[str, Any]:
    """Train exactly as `shelfwise train` does on one part of a catalog; classify a disjoint part.

    Both go through the CLI's own functions (`_train_and_classify`) on catalog files written from the
    fixed split (`split`: the fit part = train + calibration, 80%; the test part = 20%). The test
    catalog has no ``category_path`` (so routing cannot see the truth); the truth is joined back by
    ``sku_id``. Reported on the test part: `realized_figures`, the suspects on planted misfilings, the
    correctness-score comparison, and the TF-IDF+SVM baseline's top-1 accuracy and coverage at 95%
    precision with an oracle threshold chosen on this same test part. ``rescore``: reuse the model and
    predictions of an earlier run in ``workdir`` (only the figures are recomputed). ``rankings``: the
    setting of that name (`_rankings_figures`).
    """
    cat = Catalog.load(name)
    fit_a, cal_a, test_idx = split(cat.paths)
    fit_idx = np.concatenate([fit_a, cal_a])
    state = workdir / name
    rescore = rescore and (state / "predictions.parquet").exists()
    seconds = None
    if not rescore:
        _prepare(cat, state, fit_idx, test_idx)
        seconds = round(_train_and_classify(cat, state, target, rankings), 1)
    fit_report = json.loads((state / "model" / "manifest.json").read_text())["fit_report"]
    outcome, truth = _outcome(cat, state, test_idx)
    b_paths, b_conf = baseline_predict(cat.frame, cat.fields, fit_idx, test_idx, cat.paths)
    base = evaluate(b_paths, [cat.paths[i] for i in test_idx], b_conf)
    return {
        "split": "seeded stratified 80/20 (train+calibration parts of `split` -> test part); rare classes "
        "(<3 rows) train only",
        "train_rows": len(fit_idx),
        "seconds_train": seconds,
        **realized_figures(outcome, target),
        **_rankings_figures(state, outcome, target, rankings),
        "train_out_of_fold": fit_report.get("heldout", {}),
        "suspects": suspects_on_planted(state, truth),
        "correctness_score": correctness_comparison(state, target=target),
        "baseline_top1_accuracy": round(base["leaf_accuracy"], 4),
        "baseline_oracle_coverage_at_95": round(base["coverage_at_precision"]["0.95"], 4),
    }


def disjoint_all_folds(
    name: str,
    *,
    workdir: Path,
    target: float = 0.95,
    folds: int = 5,
    rankings: tuple[str, ...] = _DEFAULT_RANKINGS,
    rescore: bool = False,
) -> dict[str, Any]:
    """Every product tested once by a model trained without it: the catalog's rows of classes with at
    least ``folds`` rows in ``folds`` stratified folds (seed 0; rarer classes always train), each fold
    the test part of one `shelfwise train` + `classify` run as in `disjoint`; the figures pooled.

    The same scheme as quality.py's ``cross_validated`` (chosen there for the small catalogs because a
    20% test part holds ~120-170 products, where one product moves a share by ~0.7 points).
    """
    from sklearn.model_selection import StratifiedKFold

    cat = Catalog.load(name)
    y = np.asarray(cat.paths, dtype=object)
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    testable, rare = np.flatnonzero(counts[inv] >= folds), np.flatnonzero(counts[inv] < folds)
    parts, offs, kept, per_fold = [], [], [], []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for i, (tr, te) in enumerate(skf.split(testable, y[testable])):
        state = workdir / f"{name}_fold{i}"
        fit_idx, test_idx = np.concatenate([testable[tr], rare]), testable[te]
        if not rescore:
            _prepare(cat, state, fit_idx, test_idx)
            _train_and_classify(cat, state, target, rankings)
        outcome, _ = _outcome(cat, state, test_idx)
        parts.append(outcome)
        heldout = json.loads((state / "model" / "manifest.json").read_text())["fit_report"]["heldout"]
        extra = _rankings_figures(state, outcome, target, rankings)
        if extra:
            offs.append(dataclasses.replace(outcome, auto=confidence_only_auto(state)))
            kept.append(kept_ranking_scores(state, outcome.confidence))
        per_fold.append(
            {**realized_figures(outcome, target), "train_proven_share": heldout.get("proven_share"), **extra}
        )
    pooled = {"folds": folds, **realized_figures(Outcome.concat(parts), target)}
    if offs:
        pooled["confidence_only"] = realized_figures(Outcome.concat(offs), target)
        exact = Outcome.concat(parts).exact
        pooled["best_cut_share_of_the_kept_ranking"] = _best_cuts(np.concatenate(kept), exact, target)
    return {**pooled, "per_fold": per_fold}


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
            "answers, share of all rows (cut) | information gain, leaf only / with back-off |"
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
            f"{h['excluded_categories']} | {fmt(b.get('share_of_all_rows'))} ({b.get('threshold')}) | "
            f"{fmt(b.get('information_gain_leaf_only'))} / {fmt(b.get('information_gain_with_backoff'))} |"
        )
    return "\n".join([*lines, "", *_all_folds_markdown(results), "", suspects_markdown(results)])


def _all_folds_markdown(results: dict[str, Any]) -> list[str]:
    """The small catalogs with every product tested once (``all_folds``), pooled over the folds."""
    lines = [
        (
            "| catalog (every product once, 5 folds pooled) | test rows | auto share | exact precision of "
            "auto rows (95% CI) | one-sided 95% lower bound | best-cut share at 95% / 96% / 97% | "
            "auto share / best-cut share at 96% | top-1 accuracy | back-off answer share (ancestor-correct) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        a = r.get("all_folds")
        if not a:
            continue
        ci = a["auto_exact_precision_ci95"]
        prec = "-" if ci is None else f"{a['auto_exact_precision']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(
            f"| {name} | {a['test_rows']} | {a['auto_share']:.3f} | {prec} | "
            f"{fmt(a['auto_exact_precision_lower_bound_one_sided'])} | "
            f"{' / '.join(fmt(v) for v in a['best_cut_share'].values())} | "
            f"{fmt(a.get('auto_over_best_cut_plus_1pt'))} | {a['top1_accuracy']:.3f} | "
            f"{a['confident_share']:.3f} ({fmt(a['confident_precision_ancestor_ok'])}) |"
        )
    return lines


def _store(out_path: Path, key: str, block: dict[str, Any]) -> None:
    """Write ``block`` under ``key``, over the file as it is now (others may have written since)."""
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results[key] = block
    write_results(out_path, results)


def run(args: argparse.Namespace) -> int:
    """The ``--disjoint`` mode of quality.py's command line (``--datasets``, ``--out``, ``--table``,
    ``--rescore``, ``--all-folds``)."""
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    rankings = tuple(dict.fromkeys(["confidence", *args.rankings]))
    key = "disjoint" if rankings == _DEFAULT_RANKINGS else "disjoint_with_correctness_ranking"
    workdir = BENCH / key
    block = dict(results.get(key, {}))
    if args.table:
        print(disjoint_markdown(block))
        return 0
    for name in args.datasets:
        before = block.get(name) or {}
        if args.only_all_folds and name in args.all_folds:
            folds = disjoint_all_folds(name, workdir=workdir, rankings=rankings, rescore=args.rescore)
            block[name] = {**before, "all_folds": folds}
            _store(out_path, key, block)
            continue
        block[name] = disjoint(name, workdir=workdir, rescore=args.rescore, rankings=rankings)
        if block[name]["seconds_train"] is None:
            block[name]["seconds_train"] = before.get("seconds_train")
        if name in args.all_folds and not args.rescore:
            block[name]["all_folds"] = disjoint_all_folds(name, workdir=workdir, rankings=rankings)
        elif "all_folds" in before:
            block[name]["all_folds"] = before["all_folds"]
        print(f"{name}: {block[name]}", flush=True)
        _store(out_path, key, block)
    print(disjoint_markdown({n: r for n, r in block.items() if "test_rows" in r}))
    return 0
