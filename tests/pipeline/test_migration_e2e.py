"""A migration night end to end on real Flipkart products and a reorganised copy of their tree.

Night 1 trains on the OLD tree and a reviewer decides a few items. Then `shelfwise run --taxonomy NEW
--taxonomy-mapping MAP.csv` (a rename, a merge, a move, two removals without a target) must: keep every
reviewer decision that has a target (on its new node), predict only NEW nodes, send SKUs whose category
vanished to review (reason taxonomy_changed), report the change, and classify as well as a model
trained on NEW from scratch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import Quarantine
from shelfwise.pipeline import iter_shards
from shelfwise.settings import load_settings
from taxonomy import load_taxonomy
from verification import ItemFilter, QueueStore

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))

RENAME = {"Kitchen & Dining > Coffee Mugs": "Kitchen & Dining > Mugs & Cups"}
MERGE = {
    "Home Furnishing > Bed Linen > Blankets, Quilts & Dohars": "Home Furnishing > Bed Linen > Bedding",
    "Home Furnishing > Bed Linen > Bedsheets": "Home Furnishing > Bed Linen > Bedding",
}
MOVE = {
    "Kitchen & Dining > Lighting > Bulbs": "Home Decor & Festive Needs > Decorative Lighting & Lamps > Bulbs"
}
REMOVE = (
    "Beauty and Personal Care > Combos and Kits",
    "Computers > Laptop Accessories > Computer Accessories Combos",
)
CHANGED = {**RENAME, **MERGE, **MOVE}

pytestmark = pytest.mark.timeout(1800)  # three small trainings (OLD, the migration, NEW from scratch)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([SHELFWISE, *args], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"shelfwise {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _to_new(path: str) -> str | None:
    return None if path in REMOVE else CHANGED.get(path, path)


@pytest.fixture(scope="module")
def night(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("migration")
    old_tax_path = real_data / "taxonomies" / "flipkart_categories.txt"
    old = load_taxonomy(old_tax_path)
    for p in [*CHANGED, *REMOVE]:
        assert old.by_path(p).is_leaf, p
    new_lines = sorted({_to_new(n.path) for n in old} - {None})  # type: ignore[type-var]
    (work / "new_tree.txt").write_text("\n".join(str(p) for p in new_lines) + "\n")
    (work / "map.csv").write_text(
        "old_path,new_path\n" + "".join(f'"{a}","{b}"\n' for a, b in CHANGED.items())
    )
    # exporting back to OLD: the changed leaves and the top levels are listed, everything else falls back
    back = {**{b: a for a, b in CHANGED.items()}, **{n.path: n.path for n in old.roots()}}
    (work / "back.csv").write_text("new,old\n" + "".join(f'"{a}","{b}"\n' for a, b in back.items()))

    df = pl.read_parquet(real_data / "catalogs" / "flipkart.parquet").sample(
        fraction=1.0, shuffle=True, seed=11
    )
    cols = ["sku_id", "title", "description", "brand", "category_path"]
    labelled, tonight = df.head(300).select(cols), df.slice(300, 160).select(cols)
    labelled.write_parquet(work / "labelled.parquet")
    tonight.write_parquet(work / "tonight.parquet")
    state, model = work / "state", work / "model"
    _cli(
        "train",
        "--taxonomy",
        str(old_tax_path),
        "--catalog",
        str(work / "labelled.parquet"),
        "--model-dir",
        str(model),
        "--state-dir",
        str(state),
    )

    # A reviewer decided three of tonight's products in OLD: a renamed, a merged and a removed node (the
    # decision is kept while the product's content_hash is unchanged, so it is computed the pipeline's way).
    quarantine = Quarantine(work / "q.jsonl")
    shards = list(
        iter_shards(
            work / "tonight.parquet",
            settings=load_settings(state_dir=state),
            taxonomy=old,
            quarantine=quarantine,
        )
    )
    quarantine.close()
    hashes = dict(pl.concat(shards).select("sku_id", "content_hash").iter_rows())

    def first(paths: tuple[str, ...] | list[str]) -> dict[str, str]:
        row = tonight.filter(pl.col("category_path").is_in(list(paths))).row(0, named=True)
        return {"sku_id": row["sku_id"], "path": row["category_path"]}

    decided = {"renamed": first(list(RENAME)), "merged": first(list(MERGE)), "removed": first(REMOVE)}
    store = QueueStore(f"sqlite:///{state / 'queue.db'}")
    store.upgrade()
    rows = [
        {
            "sku_id": d["sku_id"],
            "queue": "low_confidence",
            "priority": 1e9 - i,
            "reason": "low_confidence",
            "category_id": old.by_path(d["path"]).id,
            "category_path": d["path"],
            "confidence": 0.3,
            "taxonomy_version": old.version,
            "model_version": "night-1",
            "content_hash": hashes[d["sku_id"]],
            "title": d["sku_id"],
        }
        for i, d in enumerate(decided.values())
    ]
    store.enqueue(pl.DataFrame(rows), run_id="night-1")
    for _ in decided:
        [item] = store.claim("low_confidence", "ann")
        store.decide(item.id, "ann", "accept")
    store.close()

    out = work / "pred.parquet"
    proc = _cli(
        "run",
        "--catalog",
        str(work / "tonight.parquet"),
        "--taxonomy",
        str(work / "new_tree.txt"),
        "--taxonomy-mapping",
        str(work / "map.csv"),
        "--labelled",
        str(work / "labelled.parquet"),
        "--model-dir",
        str(model),
        "--state-dir",
        str(state),
        "--out",
        str(out),
        "--export-taxonomy",
        str(old_tax_path),
        "--export-mapping",
        str(work / "back.csv"),
    )
    return {
        "work": work,
        "state": state,
        "model": model,
        "out": out,
        "decided": decided,
        "tonight": tonight,
        "new": load_taxonomy(work / "new_tree.txt"),
        "old": old,
        "stdout": proc.stdout + proc.stderr,
        "back": back,
    }


@pytest.mark.slow
def test_migration_night_keeps_decisions_predicts_new_nodes_and_routes_orphans(night: dict) -> None:  # type: ignore[type-arg]
    new, decided = night["new"], night["decided"]
    pred = pl.read_parquet(night["out"])
    assert pred.height == night["tonight"].height
    assert pred["category_id"].is_in(new.ids).all()  # NEW nodes only
    assert pred["taxonomy_version"].unique().to_list() == [new.version]
    by_sku = {r["sku_id"]: r for r in pred.iter_rows(named=True)}

    # every reviewer decision with a target follows its node; the one without goes back to review
    store = QueueStore(f"sqlite:///{night['state'] / 'queue.db'}")
    labels = {r["sku_id"]: r["category_path"] for r in store.labels().iter_rows(named=True)}
    assert labels[decided["renamed"]["sku_id"]] == "Kitchen & Dining > Mugs & Cups"
    assert labels[decided["merged"]["sku_id"]] == "Home Furnishing > Bed Linen > Bedding"
    assert decided["removed"]["sku_id"] not in labels
    for kind in ("renamed", "merged"):
        row = by_sku[decided[kind]["sku_id"]]
        assert row["source"] == "human" and row["category_path"] == labels[decided[kind]["sku_id"]]

    # SKUs whose category vanished without a target: review, reason taxonomy_changed, in the queue
    orphans = night["tonight"].filter(pl.col("category_path").is_in(list(REMOVE)))["sku_id"].to_list()
    assert orphans
    for sku in orphans:
        assert by_sku[sku]["route"] == "review" and by_sku[sku]["reason"] == "taxonomy_changed", sku
    open_items, _ = store.list_items(ItemFilter(reason="taxonomy_changed"), limit=500)
    assert {i.sku_id for i in open_items} == set(orphans)
    store.close()
    # a renamed category in tonight's catalog is not a disagreement: no renamed-node SKU is suspect for it
    renamed_skus = night["tonight"].filter(pl.col("category_path").is_in(list(CHANGED)))["sku_id"].to_list()
    for sku in renamed_skus:
        row = by_sku[sku]
        assert (
            row["current_category_path"]
            == CHANGED[night["tonight"].filter(pl.col("sku_id") == sku)["category_path"][0]]
        )
    summaries = [json.loads(p.read_text()) for p in (night["state"] / "runs").glob("*/summary.json")]
    [summary] = [s for s in summaries if "taxonomy_change" in s]
    run_id, change = summary["run_id"], summary["taxonomy_change"]
    assert change["counts"]["mapped"] == 4 and change["counts"]["removed_without_target"] == 2
    assert change["reviewer_labels"] == {"remapped": 2, "lost": 1}
    assert change["skus"]["routed_to_review"] == change["skus"]["lost"] == len(orphans)
    assert change["skus"]["remapped"] == len(renamed_skus)
    assert sum(v for k, v in change["skus"].items() if k != "routed_to_review") == len(by_sku)
    report = (night["state"] / "runs" / run_id / "report" / "report.html").read_text()
    assert "Taxonomy change" in report and "taxonomy_changed" in report


@pytest.mark.slow
def test_migrated_model_is_as_accurate_as_one_trained_on_new_from_scratch(night: dict) -> None:  # type: ignore[type-arg]
    work = night["work"]
    labelled = pl.read_parquet(work / "labelled.parquet").with_columns(
        pl.col("category_path").map_elements(_to_new, return_dtype=pl.String)
    )
    labelled.write_parquet(work / "labelled_new.parquet")
    scratch = work / "scratch"
    # same state dir: the embedding cache is shared; its human labels are on tonight's SKUs, not the labelled
    _cli(
        "train",
        "--taxonomy",
        str(work / "new_tree.txt"),
        "--catalog",
        str(work / "labelled_new.parquet"),
        "--model-dir",
        str(scratch),
        "--state-dir",
        str(night["state"]),
    )
    out = work / "scratch.parquet"
    _cli(
        "classify",
        "--model-dir",
        str(scratch),
        "--catalog",
        str(work / "tonight.parquet"),
        "--out",
        str(out),
        "--no-enqueue",
        "--state-dir",
        str(night["state"]),
    )
    truth = (
        night["tonight"]
        .with_columns(pl.col("category_path").map_elements(_to_new, return_dtype=pl.String).alias("truth"))
        .filter(pl.col("truth").is_not_null())
    )
    human = {night["decided"][k]["sku_id"] for k in ("renamed", "merged")}

    def accuracy(path: Path) -> float:
        j = truth.join(pl.read_parquet(path).select("sku_id", "category_path"), on="sku_id", suffix="_pred")
        j = j.filter(~pl.col("sku_id").is_in(list(human)))
        return float((j["truth"] == j["category_path_pred"]).mean())

    migrated, fresh = accuracy(night["out"]), accuracy(out)
    print(f"accuracy on NEW: migrated {migrated:.3f}, trained from scratch {fresh:.3f} ({truth.height} SKUs)")
    assert migrated >= fresh - 0.03
    assert migrated > 0.6


@pytest.mark.slow
def test_run_exports_each_prediction_to_the_old_tree_through_the_mapping(night: dict) -> None:  # type: ignore[type-arg]
    pred = pl.read_parquet(night["out"])
    back, old = night["back"], night["old"]
    assert {"export_category_id", "export_category_path", "export_mapping_status"} <= set(pred.columns)
    for row in pred.iter_rows(named=True):
        path = row["category_path"]
        if path in back:
            expected, status = back[path], "mapped"
        else:
            status = "ancestor"  # the nearest listed ancestor's target
            prefixes = [" > ".join(path.split(" > ")[:k]) for k in range(len(path.split(" > ")) - 1, 0, -1)]
            expected = next(back[p] for p in prefixes if p in back)
        assert row["export_mapping_status"] == status, path
        assert (
            row["export_category_path"] == expected and old.by_path(expected).id == row["export_category_id"]
        )
    assert set(pred["export_mapping_status"]) == {"mapped", "ancestor"}


@pytest.mark.slow
def test_the_next_night_carries_the_migration_nights_final_routes(night: dict) -> None:  # type: ignore[type-arg]
    """The carry state is committed from the migration night's final rows: an unchanged orphan carried
    to the next night keeps its route to review (reason taxonomy_changed), not its pre-migration route."""
    first = pl.read_parquet(night["out"])
    orphans = first.filter(pl.col("reason") == "taxonomy_changed").select("sku_id", "route", "queue")
    assert orphans.height and (orphans["route"] == "review").all()
    out = night["work"] / "pred-next-night.parquet"
    _cli(
        "run",
        "--catalog",
        str(night["work"] / "tonight.parquet"),
        "--model-dir",
        str(night["model"]),
        "--state-dir",
        str(night["state"]),
        "--out",
        str(out),
    )
    nxt = pl.read_parquet(out)
    summary = json.loads((night["state"] / "runs" / nxt["run_id"][0] / "summary.json").read_text())
    assert summary["incremental"]["mode"] == "incremental" and "taxonomy_change" not in summary
    again = nxt.join(orphans.select("sku_id"), on="sku_id")
    assert again.height == orphans.height
    assert (again["scored_run_id"] == first["run_id"][0]).all(), "the orphans were carried, not re-scored"
    assert (again["route"] == "review").all() and (again["reason"] == "taxonomy_changed").all()
    assert (again["queue"] == "low_confidence").all()
