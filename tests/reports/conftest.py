"""Two real nightly runs on real Flipkart products, with simulated reviewers in between.

Night 1 classifies 289 real products (45 deliberately misfiled, 8 without a category, 4 on a category
path that is not in the taxonomy, 3 broken rows that must be quarantined). Reviewers then answer the
queues with the products' true categories (drawn from the real catalog), except on a known set of items
where they overrule the model with another node; a few suspect items get a second reviewer. Night 2
sees 20 products fewer, 40 new ones and 8 edited titles, and keeps the human decisions.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shelfwise.settings import Settings

REVIEWERS = ("alice", "bob", "chandra")


@dataclass
class Nights:
    settings: Settings
    work: Path
    runs: list[dict[str, Any]]
    truth: dict[str, str]
    taxonomy: Any
    overruled: set[str] = field(default_factory=set)
    double_checked: set[int] = field(default_factory=set)
    reports: list[Path] = field(default_factory=list)


@pytest.fixture(scope="session")
def shared_data(real_data: Path) -> Path:
    """Tests here read the bundled excerpt (tests/data, see SOURCES.md): it holds every file they use.

    Kept under the old name so the test bodies need no change; new code should ask for `real_data`.
    """
    return real_data


def _catalogs(shared: Path, work: Path) -> dict[str, Path]:
    df = pl.read_parquet(shared / "catalogs" / "flipkart.parquet").sample(fraction=1.0, shuffle=True, seed=11)
    # titles and brands only: Flipkart's long descriptions make embedding slow on 2 shared cores
    cols = ["sku_id", "title", "brand", "category_path", "image_path"]
    labelled, tonight = df.head(450).select(cols), df.slice(450).select(cols)
    labelled.write_parquet(work / "labelled.parquet")
    paths = tonight["category_path"].to_list()
    tops = [p.split(" > ")[0] for p in paths]
    current = list(paths)
    n = len(paths)
    # misfiled: the category of some product from another top-level branch (15 here, 30 more after the
    # rows without a category below, so the suspect queue has enough items for double checks)
    for i in [*range(15), *range(27, 57)]:
        j = next(k % n for k in range(i * 17 + 40, i * 17 + 40 + n) if tops[k % n] != tops[i])
        current[i] = paths[j]
    for i in range(15, 23):  # no category in the catalog
        current[i] = None
    for i in range(23, 27):  # a category path the taxonomy no longer has
        current[i] = "Discontinued > Old Range > " + paths[i].split(" > ")[-1]
    night1 = tonight.with_columns(pl.Series("category_path", current, dtype=pl.String))
    broken = night1.head(3).with_columns(
        pl.Series("sku_id", ["", "broken-no-text", night1["sku_id"][5]]),
        pl.lit(None, dtype=pl.String).alias("title"),
    )
    pl.concat([night1, broken]).write_csv(work / "night1.csv")
    extra = labelled.slice(0, 40).select(cols)
    night2 = pl.concat([night1.slice(20), extra])
    edited = night2["sku_id"].to_list()[:8]
    night2 = night2.with_columns(
        pl.when(pl.col("sku_id").is_in(edited))
        .then(pl.col("title") + " (new edition)")
        .otherwise(pl.col("title"))
        .alias("title")
    )
    night2.write_csv(work / "night2.csv")
    truth = dict(zip(df["sku_id"].to_list(), df["category_path"].to_list(), strict=True))
    (work / "truth.json").write_text(json.dumps(truth))
    return {
        "labelled": work / "labelled.parquet",
        "night1": work / "night1.csv",
        "night2": work / "night2.csv",
        "taxonomy": shared / "taxonomies" / "flipkart_categories.txt",
    }


def _review(
    settings: Settings, truth: dict[str, str], tax: Any, rng: random.Random
) -> tuple[set[str], set[int]]:
    """Reviewers answer most open items with the true category; every 7th answer overrules the model."""
    from verification.store import QueueStore

    store = QueueStore(settings.queue_url or "", consensus_suspect=True)
    overruled: set[str] = set()
    double: set[int] = set()
    leaves = [n for n in tax if n.is_leaf]
    answered = 0
    for queue, share_done in (("audit", 1.0), ("suspect", 1.0), ("low_confidence", 0.6), ("llm_failed", 1.0)):
        n_open = store.queue_counts().get(queue, {}).get("open", 0)
        for k in range(int(n_open * share_done)):
            who = REVIEWERS[k % len(REVIEWERS)]
            got = store.claim(queue, who)
            if not got:
                break
            item = got[0]
            true_path = truth[item.sku_id]
            answered += 1
            if answered % 7 == 0:  # a reviewer overrules the model with some other leaf
                node = rng.choice(
                    [n for n in leaves if n.path not in (true_path, item.suggested_category_path)]
                )
                overruled.add(item.sku_id)
            else:
                node = tax.find_path(true_path)
            duration = rng.randint(3_000, 45_000)
            if node.id == item.suggested_category_id:
                res = store.decide(item.id, who, "accept", duration_ms=duration)
            else:
                res = store.decide(
                    item.id, who, "choose", category_id=node.id, category_path=node.path, duration_ms=duration
                )
            if not res.final:  # consensus: a second, different reviewer decides the suspect
                second = next(r for r in REVIEWERS if r != who)
                again = store.claim(queue, second, filters=None)
                target = next((g for g in again if g.id == item.id), None)
                if target is None:
                    continue
                double.add(item.id)
                if len(double) % 3 == 0:  # now and then the second reviewer keeps the model's suggestion
                    store.decide(item.id, second, "accept", duration_ms=rng.randint(3_000, 20_000))
                else:
                    store.decide(
                        item.id,
                        second,
                        "choose",
                        category_id=node.id,
                        category_path=node.path,
                        duration_ms=rng.randint(3_000, 20_000),
                    )
                for g in again:
                    if g.id != item.id:
                        store.release(g.id, second)
    store.close()
    return overruled, double


@pytest.fixture(scope="session")
def nights(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Nights:
    """Built once for the whole session (training and two nights take a while on 2 cores)."""
    from shelfwise import pipeline
    from shelfwise.reports import write_report

    work = tmp_path_factory.mktemp("reports")
    files = _catalogs(real_data, work)
    settings = Settings(state_dir=work / "state", audit_rate=0.3)
    model_dir = work / "model"
    pipeline.train(
        taxonomy_path=files["taxonomy"], catalog=files["labelled"], model_dir=model_dir, settings=settings
    )
    tax = pipeline.load_model_taxonomy(model_dir)
    truth = json.loads((work / "truth.json").read_text())
    runs = []
    reports = []
    first = pipeline.classify_catalog(
        model_dir=model_dir,
        catalog=files["night1"],
        out=work / "night1.parquet",
        settings=settings,
        images_root=real_data,
    )
    runs.append(first.as_dict())  # the summary.json form (a RunSummary as a plain dict)
    reports.append(write_report(first["run_id"], settings=settings))
    overruled, double = _review(settings, truth, tax, random.Random(5))
    second = pipeline.classify_catalog(
        model_dir=model_dir,
        catalog=files["night2"],
        out=work / "night2.parquet",
        settings=settings,
        images_root=real_data,
    )
    runs.append(second.as_dict())
    reports.append(write_report(second["run_id"], settings=settings))
    return Nights(settings, work, runs, truth, tax, overruled, double, reports)
