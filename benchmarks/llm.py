"""What the LLM step costs and buys, on each shared catalog.

    .venv/bin/python benchmarks/llm.py --base-url http://127.0.0.1:8080/v1 --model NAME [--limit 200]
    .venv/bin/python benchmarks/llm.py --smollm2 --limit 30     # local SmolLM2-135M: protocol only
    .venv/bin/python benchmarks/llm.py                          # no endpoint: gate figures only
    .venv/bin/python benchmarks/llm.py --overhead 2000 [--pg URL]  # the arbiter's own cost per question

--overhead N sends N real Amazon UK titles through the arbiter against the instant fake OpenAI server of
the tests (tests/llm/fake_openai.py, 127.0.0.1): what the arbiter itself costs per question (prompt,
HTTP, parsing, cache and log writes), cold, warm (all from the cache) and with the shared budget ledger
on, on SQLite and (with --pg) on PostgreSQL. No model is measured.

For each catalog (Amazon UK titles, Flipkart, Women's Clothing reviews) with its own taxonomy: train a
classifier on a seeded 80 % split, classify the other 20 %, gate the uncertain items (`classifiers.llm.gate`
with the default thresholds), send the gated items to the LLM arbiter (fresh cache unless --store), and
report: gated share, LLM HTTP calls per 1,000 SKUs, tokens, wall time, and accuracy on the gated items
with the classifier alone and with the LLM's decisions.

The classifier is `classifiers.model.CategoryModel` when it is importable (MiniLM embeddings), else a
stand-in: TF-IDF word 1-2 + char 2-5 grams with a sigmoid-calibrated LinearSVC (the best lexical baseline
in FINDINGS.md). Endpoint: --base-url / --model, else OPENAI_BASE_URL (+ SHELFWISE_LLM__MODEL). Without
any, the LLM part measures nothing and says why. SmolLM2-135M is far too small to judge categories (on
our prompts it mostly answers "none of these" and walks the tree): its accuracy figures say nothing about
LLM arbitration; they only show the protocol works end to end. --classifier tfidf is much faster to train.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from classifiers.llm import LLMArbiter, LLMSettings, gate
from taxonomy import load_taxonomy

CATALOGS = {
    "amazon_uk": ("amazon_uk.parquet", "amazon_uk_categories.txt"),
    "flipkart": ("flipkart.parquet", "flipkart_categories.txt"),
    "womens_clothing": ("womens_clothing_reviews.parquet", "womens_clothing_categories.txt"),
}


def load_items(shared: Path, name: str) -> pl.DataFrame:
    """Canonical-ish product rows (sku_id, title, description, brand, attributes, review_text,
    category_path)."""
    file, _ = CATALOGS[name]
    df = pl.read_parquet(shared / "catalogs" / file)
    if name == "womens_clothing":
        df = (
            df.filter(pl.col("category_path").is_not_null())
            .group_by("sku_id", maintain_order=True)
            .agg(
                pl.col("review_title").drop_nulls().first().alias("title"),
                pl.col("review_text").drop_nulls().str.join(" | ").alias("review_text"),
                pl.col("category_path").first(),
            )
            .with_columns(
                pl.col("title").fill_null(""),
                pl.lit(None, pl.String).alias("description"),
                pl.lit(None, pl.String).alias("brand"),
            )
        )
    for col in ("description", "brand", "review_text"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, pl.String).alias(col))
    attrs = pl.lit(None, pl.String)
    if "price_gbp" in df.columns:
        attrs = pl.format("price: {} GBP", pl.col("price_gbp"))
    df = df.with_columns(attrs.alias("attributes"))
    return df.filter(pl.col("category_path").is_not_null()).select(
        "sku_id", "title", "description", "brand", "attributes", "review_text", "category_path"
    )


def _text(df: pl.DataFrame) -> list[str]:
    return [
        " ".join(str(r[c]) for c in ("title", "brand", "description", "review_text") if r.get(c))[:3000]
        for r in df.iter_rows(named=True)
    ]


def classify(train: pl.DataFrame, test: pl.DataFrame, tax: Any, *, top_k: int, which: str) -> dict[str, Any]:
    """Top-k ids/scores (best first), the classifier's answer, its confidence and margin (as the pipeline)."""
    if which in ("auto", "model"):
        try:
            from classifiers.model import CategoryModel  # the real classifier, when its helper has shipped it
        except ImportError:
            if which == "model":
                raise
        else:
            from classifiers import EmbeddingCache, make_embedder

            emb = make_embedder("minilm")
            cache = EmbeddingCache(Path(tempfile.mkdtemp()) / "emb.sqlite")
            model = CategoryModel().fit(train, tax, embedder=emb, cache=cache)
            pred = model.predict(test, embedder=emb, cache=cache, top_k=top_k)
            return {
                "ids": np.asarray(pred.category_ids),
                "scores": np.asarray(pred.scores, dtype=float),
                "answer": np.asarray(pred.predicted_ids).astype(str),
                "confidence": np.asarray(pred.confidence, dtype=float),
                "margin": np.asarray(pred.margin, dtype=float),
                "name": "CategoryModel (MiniLM + TF-IDF stack)",
            }
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    ids = [tax.find_path(p).id for p in train["category_path"]]
    counts = Counter(ids)
    keep = {i for i, c in counts.items() if c >= 3}  # calibration needs a few examples per class
    mask = [i in keep for i in ids]
    x_train = [t for t, m in zip(_text(train), mask, strict=True) if m]
    y_train = [i for i, m in zip(ids, mask, strict=True) if m]
    clf = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
        ),
        CalibratedClassifierCV(LinearSVC(C=0.5), cv=3, method="sigmoid"),
    ).fit(x_train, y_train)
    proba = clf.predict_proba(_text(test))
    classes = np.asarray(clf.classes_)
    order = np.argsort(-proba, axis=1)[:, :top_k]
    top = np.take_along_axis(proba, order, axis=1)
    return {
        "ids": classes[order],
        "scores": top,
        "answer": classes[order[:, 0]],
        "confidence": top[:, 0],
        "margin": top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0),
        "name": "stand-in: TF-IDF + calibrated LinearSVC",
    }


@dataclass
class Scored:
    """One catalog's held-out SKUs, scored by the classifier and gated."""

    name: str
    tax: Any
    test: pl.DataFrame
    clf: dict[str, Any]
    truth: np.ndarray
    gated: np.ndarray
    classifier_s: float


def _scored(name: str, args: argparse.Namespace, settings: LLMSettings) -> Scored:
    """Train on a seeded 80 % split, classify the other 20 %, gate the uncertain items."""
    _, tax_file = CATALOGS[name]
    tax = load_taxonomy(args.shared / "taxonomies" / tax_file)
    items = load_items(args.shared, name).filter(
        pl.col("category_path").map_elements(lambda p: tax.find_path(p) is not None, return_dtype=pl.Boolean)
    )
    rng = np.random.default_rng(0)
    test_mask = rng.random(items.height) < 0.2
    train, test = items.filter(pl.Series(~test_mask)), items.filter(pl.Series(test_mask))
    t0 = time.perf_counter()
    clf = classify(train, test, tax, top_k=settings.top_k, which=args.classifier)
    clf_s = time.perf_counter() - t0
    truth = np.array([tax.find_path(p).id for p in test["category_path"]])
    gated = gate(clf["confidence"], clf["margin"], settings=settings)
    return Scored(name, tax, test, clf, truth, gated, clf_s)


def _gate_figures(sc: Scored, note: str) -> dict[str, Any]:
    top1, truth, gated = sc.clf["answer"], sc.truth, sc.gated
    return {
        "catalog": sc.name,
        "classifier": sc.clf["name"],
        "test_skus": int(sc.test.height),
        "classifier_s": round(sc.classifier_s, 1),
        "accuracy_all": round(float((top1 == truth).mean()), 4),
        "gated": int(gated.sum()),
        "gated_share": round(float(gated.mean()), 4),
        "accuracy_gated_classifier": round(float((top1[gated] == truth[gated]).mean()), 4)
        if gated.any()
        else None,
        "accuracy_not_gated": round(float((top1[~gated] == truth[~gated]).mean()), 4)
        if (~gated).any()
        else None,
        "llm": None,
        "llm_note": note,
    }


def _llm_figures(sc: Scored, args: argparse.Namespace, settings: LLMSettings, server: Any) -> dict[str, Any]:
    """Send the gated items (at most --limit) to the arbiter: calls, tokens, time, accuracy with the LLM."""
    tax, test, clf, truth, gated = sc.tax, sc.test, sc.clf, sc.truth, sc.gated
    ids, scores, conf, top1 = clf["ids"], clf["scores"], clf["confidence"], clf["answer"]
    idx = np.flatnonzero(gated)
    if args.limit:
        idx = idx[: args.limit]
    cands = [
        [
            {"category_id": str(c), "category_path": tax.get(str(c)).path, "score": float(s)}
            for c, s in zip(ids[i], scores[i], strict=True)
            if c is not None and str(c) in tax
        ]
        for i in idx
    ]
    llm_items = test[idx].with_columns(pl.Series("candidates", cands), pl.Series("confidence", conf[idx]))
    if server is not None and server.proc is None:
        server.start(timeout_s=180)
    store = args.store or Path(tempfile.mkdtemp(prefix="shelfwise-llm-bench-")) / "llm.sqlite"
    with LLMArbiter(settings, tax, store_path=store, run_id=f"bench-{sc.name}") as arbiter:
        t1 = time.perf_counter()
        decided = arbiter.decide(llm_items)
        wall = time.perf_counter() - t1
    by = {r["sku_id"]: r for r in decided.iter_rows(named=True)}
    final = []
    for i in idx:
        r = by[test["sku_id"][int(i)]]
        ok = r["llm_status"] in ("accepted", "none_of_these_walked") and r["llm_category_id"]
        final.append(r["llm_category_id"] if ok else top1[i])
    final_arr = np.array(final)
    st = arbiter.stats
    sent = len(idx)
    return {
        "items_sent": sent,
        "calls": st.calls,
        "questions": st.questions,
        "calls_per_1000_skus": round(st.calls / sent * gated.sum() / test.height * 1000, 1),
        "projected": bool(args.limit and sent < gated.sum()),
        "tokens_in": st.tokens_in,
        "tokens_out": st.tokens_out,
        "cost_usd": st.cost_usd,
        "wall_s": round(wall, 1),
        "latency_ms_p50": st.latency_ms_p50,
        "mode": st.mode,
        "statuses": dict(st.statuses),
        "accuracy_gated_classifier_same_items": round(float((top1[idx] == truth[idx]).mean()), 4),
        "accuracy_gated_with_llm": round(float((final_arr == truth[idx]).mean()), 4),
        "notes": st.notes,
    }


def run_catalog(
    name: str, args: argparse.Namespace, settings: LLMSettings | None, note: str, server: Any = None
) -> dict[str, Any]:
    sc = _scored(name, args, settings or LLMSettings())
    res = _gate_figures(sc, note)
    if settings is not None and sc.gated.any():
        res["llm"] = _llm_figures(sc, args, settings, server)
    return res


def overhead(args: argparse.Namespace) -> None:
    """The arbiter's own cost per question against an instant fake server (see the module docstring)."""
    sys.path.insert(0, str(REPO / "tests" / "llm"))
    from fake_openai import FakeOpenAI

    data = args.shared if args.shared.is_dir() else REPO / "tests" / "data"
    tax = load_taxonomy(data / "taxonomies" / "amazon_uk_categories.txt")
    cat = (
        pl.read_parquet(data / "catalogs" / "amazon_uk.parquet")
        .unique("title", keep="first")
        .head(args.overhead)
    )
    leaves = list(tax.leaves())
    rng = np.random.default_rng(0)
    cands = [
        [
            {"category_id": leaves[j].id, "category_path": leaves[j].path, "score": 0.4 - 0.1 * k}
            for k, j in enumerate(rng.choice(len(leaves), 3, replace=False))
        ]
        for _ in range(cat.height)
    ]
    items = cat.select("sku_id", "title", "brand").with_columns(pl.Series("candidates", cands))
    stores = {"sqlite": lambda d: {"cache_path": str(Path(d) / "llm.sqlite")}}
    if args.pg:
        stores["postgresql"] = lambda d: {"cache_url": args.pg}
    print(f"arbiter overhead: {items.height} real Amazon UK titles, instant fake server, max_concurrency 4\n")
    print("| store | run | items | questions | wall s | items/s |")
    print("|---|---|---:|---:|---:|---:|")
    with FakeOpenAI() as fake:
        for store_name, where in stores.items():
            folder = tempfile.mkdtemp(prefix="shelfwise-llm-overhead-")
            model = f"overhead-{time.time_ns()}"  # a fresh cache on a shared PostgreSQL too
            for run, extra in (
                ("cold", {}),
                ("warm (cache)", {}),
                ("cold, budget ledger on", {"budget_calls": 10**9}),
            ):
                if run.startswith("cold, budget"):
                    model += "-b"
                s = LLMSettings(
                    base_url=fake.base_url, model=model, max_concurrency=4, **where(folder), **extra
                )
                with LLMArbiter(s, tax, store_path=s.store_location()) as arb:
                    t0 = time.perf_counter()
                    out, st = arb.decide_counted(items, run_id=f"overhead-{run}")
                    wall = time.perf_counter() - t0
                assert out["llm_status"].to_list() == ["accepted"] * items.height, out[
                    "llm_status"
                ].value_counts()
                print(
                    f"| {store_name} | {run} | {items.height} | {st.questions} | {wall:.1f} | "
                    f"{items.height / wall:.0f} |"
                )


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
    ap.add_argument("--model", default=os.environ.get("SHELFWISE_LLM__MODEL"), help="model name")
    ap.add_argument(
        "--smollm2", action="store_true", help="start a local SmolLM2-135M llama.cpp server (protocol only)"
    )
    ap.add_argument("--limit", type=int, default=None, help="send at most N gated items per catalog")
    ap.add_argument("--catalogs", nargs="+", default=list(CATALOGS), choices=list(CATALOGS))
    ap.add_argument("--classifier", choices=["auto", "model", "tfidf"], default="auto")
    ap.add_argument(
        "--store", type=Path, default=None, help="LLM cache/log file (default: a fresh one: cold cache)"
    )
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--overhead", type=int, default=None, help="measure the arbiter itself on N titles")
    ap.add_argument("--pg", default=None, help="--overhead: also on this PostgreSQL URL")
    return ap.parse_args()


def _endpoint(args: argparse.Namespace) -> tuple[LLMSettings | None, str, Any]:
    """The LLM to measure: (settings or None, a note saying what is measured, a local server or None)."""
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url:
        settings = LLMSettings(base_url=base_url, **({"model": args.model} if args.model else {}))
        return settings, f"endpoint {settings.base_url}, model {settings.model}", None
    if not args.smollm2:
        return (
            None,
            (
                "measured nothing for the LLM: no endpoint (pass --base-url/--model or set OPENAI_BASE_URL), "
                "and --smollm2 not given; gate figures and classifier accuracy only"
            ),
            None,
        )
    from classifiers.llm import LlamaServer, llama_server_available

    why = llama_server_available()
    if why:
        return None, f"measured nothing for the LLM: --smollm2 asked, but {why}", None
    server = LlamaServer(log=Path(tempfile.mkdtemp()) / "llama_server.log")  # started when first needed
    settings = LLMSettings(base_url=server.base_url, model="smollm2-135m", timeout_s=120, max_concurrency=1)
    if args.limit is None:
        args.limit = 30
    return (
        settings,
        (
            "PROTOCOL ONLY: local SmolLM2-135M-Instruct (llama.cpp); far too small to judge categories, "
            "so the accuracy figures below say nothing about LLM arbitration"
        ),
        server,
    )


def _print_result(res: dict[str, Any]) -> None:
    print(f"## {res['catalog']} ({res['classifier']})")
    print(
        f"test SKUs {res['test_skus']}, classifier accuracy {res['accuracy_all']:.3f}, "
        f"gated {res['gated']} ({res['gated_share']:.1%}); accuracy on gated items "
        f"{res['accuracy_gated_classifier']}, "
        f"on the rest {res['accuracy_not_gated']}"
    )
    llm = res["llm"]
    if llm:
        print(
            f"LLM ({llm['mode']}): {llm['items_sent']} items sent, {llm['calls']} HTTP calls "
            f"({llm['questions']} questions), {llm['calls_per_1000_skus']} calls / 1,000 SKUs"
            f"{' (projected from the sent items)' if llm['projected'] else ''}, tokens "
            f"{llm['tokens_in']} in / "
            f"{llm['tokens_out']} out, ${llm['cost_usd']:.4f}, wall {llm['wall_s']} s, p50 "
            f"{llm['latency_ms_p50']} ms"
        )
        print(
            f"accuracy on these gated items: classifier "
            f"{llm['accuracy_gated_classifier_same_items']:.3f} -> "
            f"with LLM {llm['accuracy_gated_with_llm']:.3f}; statuses {llm['statuses']}"
        )
        for n in llm["notes"]:
            print(f"note: {n}")
    print()


def main() -> None:
    args = _parse_args()
    if args.overhead:
        overhead(args)
        return
    settings, note, server = _endpoint(args)
    print(f"LLM: {note}\n")
    results = []
    try:
        for name in args.catalogs:
            res = run_catalog(name, args, settings, note, server)
            results.append(res)
            _print_result(res)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
