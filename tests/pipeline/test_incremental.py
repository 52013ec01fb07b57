"""Incremental nights on real products (plain functions, no Prefect): only new and changed SKUs are scored,
every SKU is still in predictions.parquet, and identical contents are scored once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from shelfwise import night, pipeline
from shelfwise.settings import Settings
from shelfwise.state import StateGeneration, bucket_of, current_state
from shelfwise.summary import RunSummary

KEEP = ["sku_id", "category_id", "category_path", "confidence", "route", "candidates", "margin", "reason"]


@pytest.fixture(scope="module")
def flipkart(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model trained on 500 real Flipkart products; tonight's catalog is the other 239 plus 60 copies
    of 30 of them under new SKU ids (same content: a shop listing one product under several SKUs)."""
    work = tmp_path_factory.mktemp("incremental")
    df = pl.read_parquet(real_data / "catalogs" / "flipkart.parquet").sample(
        fraction=1.0, shuffle=True, seed=3
    )
    labelled, tonight = df.head(500), df.slice(500)
    labelled.write_parquet(work / "labelled.parquet")
    copies = pl.concat([tonight.head(30).with_columns(pl.col("sku_id") + f"-copy{i}") for i in (1, 2)])
    cols = ["sku_id", "title", "description", "brand", "category_path"]
    pl.concat([tonight, copies]).select(cols).write_parquet(work / "night.parquet")
    settings = Settings(state_dir=work / "train-state")
    pipeline.train(
        taxonomy_path=real_data / "taxonomies" / "flipkart_categories.txt",
        catalog=work / "labelled.parquet",
        model_dir=work / "model",
        settings=settings,
    )
    return {
        "work": work,
        "model": work / "model",
        "night": work / "night.parquet",
        "labelled": work / "labelled.parquet",
        "taxonomy": real_data / "taxonomies" / "flipkart_categories.txt",
    }


def _night(
    fk: dict[str, Path], settings: Settings, catalog: Path, out: Path, model: Path | None = None
) -> tuple[RunSummary, pl.DataFrame]:
    summary = night.classify_catalog(
        model_dir=model or fk["model"], catalog=catalog, out=out, settings=settings
    )
    return summary, pl.read_parquet(out).sort("sku_id")


def test_unchanged_skus_keep_their_prediction_and_only_changes_are_scored(
    flipkart: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", shard_size=1000)  # one shard: copies meet originals
    catalog = pl.read_parquet(flipkart["night"])
    n = catalog.height

    first, p1 = _night(flipkart, settings, flipkart["night"], tmp_path / "n1.parquet")
    assert first.incremental.mode == "full" and "first night" in first.incremental.reason
    assert first.counts.rescored == first.counts.classified == n and first.counts.carried == 0
    # the 60 copies share their content with 30 originals: 239 distinct contents scored, not 299
    # (identical contents are scored once per shard)
    assert first.counts.distinct_scored == catalog["title"].n_unique() <= n - 60
    copies = p1.filter(pl.col("sku_id").str.contains("-copy"))
    originals = p1.join(copies.select(pl.col("sku_id").str.replace(r"-copy\d$", "")), on="sku_id", how="semi")
    assert copies.height == 60 and originals.height == 30
    by_orig = dict(zip(originals["sku_id"], originals["confidence"], strict=True))
    assert all(
        by_orig[s.rsplit("-copy", 1)[0]] == c
        for s, c in zip(copies["sku_id"], copies["confidence"], strict=True)
    )

    # Same catalog the next night: nothing embedded or scored, every SKU still predicted, same answers.
    second, p2 = _night(flipkart, settings, flipkart["night"], tmp_path / "n2.parquet")
    assert second.incremental.mode == "incremental", second.incremental.reason
    assert second.counts.carried == n and second.counts.rescored == 0 and second.shards == 0
    assert second.embedding.hits + second.embedding.misses == 0
    assert p2.height == n and p2["sku_id"].n_unique() == n
    assert p2.select(KEEP).equals(p1.select(KEEP))
    assert set(p2["run_id"]) == {second.run_id} and set(p2["scored_run_id"]) == {first.run_id}
    assert second.counts.auto + second.counts.review + second.counts.suspect == n
    assert sum(second.counts.queued.values()) == 0, "carried rows were queued the night they were scored"

    # 1 product's text changes and 2 are moved to another category upstream: only those 3 are re-scored.
    changed = catalog["sku_id"][5]
    moved = catalog["sku_id"][6:8].to_list()
    other = catalog.filter(~pl.col("category_path").is_in(catalog["category_path"][6:8].to_list()))[
        "category_path"
    ][0]
    third_cat = catalog.with_columns(
        pl.when(pl.col("sku_id") == changed)
        .then(pl.lit("Stainless steel water bottle, 1 litre"))
        .otherwise(pl.col("title"))
        .alias("title"),
        pl.when(pl.col("sku_id").is_in(moved))
        .then(pl.lit(other))
        .otherwise(pl.col("category_path"))
        .alias("category_path"),
    )
    third_cat.write_parquet(tmp_path / "night3.parquet")
    third, p3 = _night(flipkart, settings, tmp_path / "night3.parquet", tmp_path / "n3.parquet")
    assert third.incremental.mode == "incremental"
    assert third.counts.rescored == 3 and third.counts.carried == n - 3
    assert third.counts.changed == 1 and third.counts.unchanged == n - 1
    rescored = set(p3.filter(pl.col("scored_run_id") == third.run_id)["sku_id"])
    assert rescored == {changed, *moved}
    assert (
        p3.height == n
        and p3.filter(pl.col("sku_id").is_in(moved))["current_category_path"].to_list() == [other] * 2
    )
    assert p3.filter(pl.col("sku_id") == changed)["title"].item() == "Stainless steel water bottle, 1 litre"


def test_a_new_model_rescores_everything_and_says_why(flipkart: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", shard_size=100)
    assert not night.may_carry(settings, flipkart["model"])  # first night: `shelfwise run` preloads
    first, _ = _night(flipkart, settings, flipkart["night"], tmp_path / "n1.parquet")
    assert night.may_carry(settings, flipkart["model"])  # same model: the model loads only if needed
    assert not night.may_carry(settings.model_copy(update={"incremental": False}), flipkart["model"])
    # the same products' embeddings, warm: the new model differs in its settings, not its inputs
    shutil.copytree(flipkart["work"] / "train-state" / "cache", tmp_path / "train2" / "cache")
    pipeline.train(
        taxonomy_path=flipkart["taxonomy"],
        catalog=flipkart["labelled"],
        model_dir=tmp_path / "model2",
        settings=Settings(state_dir=tmp_path / "train2", target_precision=0.9),
    )
    second, p2 = _night(
        flipkart, settings, flipkart["night"], tmp_path / "n2.parquet", model=tmp_path / "model2"
    )
    assert second.model_version != first.model_version
    assert not night.may_carry(settings, flipkart["model"])  # the last night used model2
    assert second.incremental.mode == "full" and "new model" in second.incremental.reason
    assert second.counts.carried == 0 and second.counts.rescored == p2.height
    assert set(p2["model_version"]) == {second.model_version}

    # routing settings are part of what a carried prediction was made with
    stricter = Settings(state_dir=tmp_path / "state", shard_size=100, auto_threshold=0.99)
    third, p3 = _night(
        flipkart, stricter, flipkart["night"], tmp_path / "n3.parquet", model=tmp_path / "model2"
    )
    assert third.incremental.mode == "full" and "routing settings changed" in third.incremental.reason
    assert (p3["route"] == "auto").sum() <= (p2["route"] == "auto").sum()
    # the summary on disk is the typed one, and keeps the keys older readers use
    disk = RunSummary.load(settings.runs_dir / third.run_id / "summary.json")
    assert disk.incremental.reason == third.incremental.reason and disk["counts"]["classified"] == p3.height


def _state_files(settings: Settings, kind: str) -> tuple[StateGeneration, list[pl.DataFrame]]:
    gen = current_state(settings)
    assert gen is not None
    return gen, [pl.read_parquet(f) for f in gen.files(kind)]


def test_bucketed_state_carries_what_one_bucket_carries_and_follows_a_new_bucket_count(
    flipkart: dict[str, Path], tmp_path: Path
) -> None:
    """The per-SKU state in 3 buckets (a hash of sku_id): two nights give the rows one bucket gives, every
    SKU's state is in exactly one bucket, and a night with another bucket count re-buckets the state."""
    catalog = pl.read_parquet(flipkart["night"])
    changed = catalog.with_columns(
        pl.when(pl.col("sku_id") == catalog["sku_id"][5])
        .then(pl.lit("Stainless steel water bottle, 1 litre"))
        .otherwise(pl.col("title"))
        .alias("title")
    )
    changed.write_parquet(tmp_path / "night2.parquet")
    nights, firsts = {}, {}
    for buckets in (1, 3):
        settings = Settings(state_dir=tmp_path / f"state{buckets}", shard_size=100, state_buckets=buckets)
        firsts[buckets] = _night(flipkart, settings, flipkart["night"], tmp_path / f"a{buckets}.parquet")[1]
        nights[buckets] = _night(
            flipkart, settings, tmp_path / "night2.parquet", tmp_path / f"b{buckets}.parquet"
        )
    (one, p_one), (three, p_three) = nights[1], nights[3]
    assert three.incremental.mode == "incremental" and three.counts.rescored == 1
    assert three.counts.carried == one.counts.carried == catalog.height - 1
    assert three.counts.changed == 1 and three.counts.unchanged == catalog.height - 1
    # the same decisions; the scores agree to float32 rounding (contents are scored in other batches)
    decided = ["sku_id", "category_id", "category_path", "route", "reason"]
    assert p_three.select(decided).equals(p_one.select(decided))
    assert (p_three["confidence"] - p_one["confidence"]).abs().max() < 1e-5  # type: ignore[operator]
    # and every carried row is last night's row as it was
    carried = p_three.filter(pl.col("scored_run_id") != three.run_id)
    assert carried.height == catalog.height - 1
    assert carried.select(KEEP).equals(firsts[3].join(carried.select("sku_id"), on="sku_id").select(KEEP))

    settings = Settings(state_dir=tmp_path / "state3", shard_size=100, state_buckets=3)
    gen, preds = _state_files(settings, "predictions")
    assert gen.buckets == 3 and len(preds) == 3 and all(p.height for p in preds)
    for b, frame in enumerate(preds):  # each bucket holds exactly its own SKUs
        assert set(bucket_of(frame["sku_id"], 3).to_list()) == {b}
    assert sorted(pl.concat([p["sku_id"] for p in preds]).to_list()) == sorted(catalog["sku_id"].to_list())

    # another bucket count: the state is re-bucketed, the unchanged SKUs are still carried
    two = Settings(state_dir=tmp_path / "state3", shard_size=100, state_buckets=2)
    again, p_again = _night(flipkart, two, tmp_path / "night2.parquet", tmp_path / "c.parquet")
    assert again.incremental.mode == "incremental" and again.counts.carried == catalog.height
    assert p_again.select(KEEP).equals(p_three.select(KEEP))
    gen, cats = _state_files(two, "catalog")
    assert gen.buckets == 2 and sum(c.height for c in cats) == catalog.height
    for b, frame in enumerate(cats):
        assert set(bucket_of(frame["sku_id"], 2).to_list()) == {b}
    assert sorted(p.name for p in (tmp_path / "state3" / "state").iterdir()) == sorted(
        ["CURRENT", gen.generation]
    )


def test_a_catalog_in_parts_with_a_repeated_sku_id_is_staged_by_several_tasks(
    flipkart: dict[str, Path], tmp_path: Path
) -> None:
    """Three part files read by three read-part tasks into two buckets: a sku_id repeated in a later part
    is quarantined by its bucket's task, naming the file and row that kept it; every SKU predicted once."""
    catalog = pl.read_parquet(flipkart["night"])
    folder = tmp_path / "parts"
    folder.mkdir()
    catalog.slice(0, 100).write_parquet(folder / "part-00000.parquet")
    catalog.slice(100, 100).write_csv(folder / "part-00001.csv")
    repeated = catalog.slice(7, 1).with_columns(pl.lit("Same id, another product").alias("title"))
    pl.concat([catalog.slice(200), repeated]).write_parquet(folder / "part-00002.parquet")
    settings = Settings(state_dir=tmp_path / "state", shard_size=100, state_buckets=2)
    source = pipeline.CatalogSource(catalog=str(folder))
    plan = pipeline.plan_stage(source, settings=settings, model_dir=flipkart["model"])
    assert len(plan.read_tasks()) == 3 and plan.buckets == 2
    summary, preds = _night(flipkart, settings, folder, tmp_path / "out.parquet")
    assert preds.height == catalog.height and preds["sku_id"].n_unique() == catalog.height
    assert summary.counts.quarantine_reasons == {"duplicate_sku_id": 1}
    dup = [json.loads(line) for line in Path(summary.quarantine_path).read_text().splitlines()]
    assert [(Path(d["file"]).name, d["row_number"], d["sku_id"]) for d in dup] == [
        ("part-00002.parquet", catalog.height - 200 + 1, catalog["sku_id"][7])
    ]
    assert dup[0]["value"] == {"file": str(folder / "part-00000.parquet"), "row_number": 8}
    assert dup[0]["raw"]["title"] == "Same id, another product"
    kept = preds.filter(pl.col("sku_id") == catalog["sku_id"][7])["title"].item()
    assert kept == catalog["title"][7]


def test_one_big_parquet_file_read_in_row_group_ranges_gives_what_one_task_gives(
    flipkart: dict[str, Path], tmp_path: Path
) -> None:
    """Tonight's products four times over (1,196 SKUs) plus two rows, as one row group (one read-part task)
    and as twelve (two read-part tasks over ranges of them): the same predictions and quarantine. A
    sku_id of row 8 repeated on row 1,001, in the other range, is caught by its bucket's task and named
    by its rows in the file."""
    night_rows = pl.read_parquet(flipkart["night"])
    catalog = pl.concat(
        [night_rows] + [night_rows.with_columns(pl.col("sku_id") + f"-{k}") for k in (1, 2, 3)]
    )
    repeated = catalog.slice(7, 1).with_columns(pl.lit("Same id, another product").alias("title"))
    blank = catalog.slice(20, 1).with_columns(
        pl.lit("blank-1").alias("sku_id"), pl.lit(None, dtype=pl.String).alias("title")
    )
    blank = blank.with_columns(pl.lit(None, dtype=pl.String).alias("description"))
    rows = pl.concat([catalog.slice(0, 1000), repeated, catalog.slice(1000), blank])
    (tmp_path / "one").mkdir()
    (tmp_path / "ranges").mkdir()
    rows.write_parquet(tmp_path / "one" / "night.parquet")
    rows.write_parquet(tmp_path / "ranges" / "night.parquet", row_group_size=100)
    got = {}
    for name in ("one", "ranges"):
        settings = Settings(state_dir=tmp_path / f"state-{name}", shard_size=100, state_buckets=2)
        path = tmp_path / name / "night.parquet"
        plan = pipeline.plan_stage(
            pipeline.CatalogSource(catalog=str(path)), settings=settings, model_dir=flipkart["model"]
        )
        # ranges of whole row groups of at least 5 shards (500 rows): rows 1-500 and 501-1,198
        assert [t.rows for t in plan.read_tasks()] == ([None] if name == "one" else [(0, 500), (500, 698)])
        summary = night.classify_catalog(
            catalog=path,
            model_dir=flipkart["model"],
            out=tmp_path / f"{name}.parquet",
            settings=settings,
            run_id="20261207T000000Z-abcdef",
        )
        quarantine = [json.loads(line) for line in Path(summary.quarantine_path).read_text().splitlines()]
        got[name] = (pl.read_parquet(tmp_path / f"{name}.parquet").sort("sku_id"), quarantine, summary)
    (p_one, q_one, s_one), (p_ranges, q_ranges, s_ranges) = got["one"], got["ranges"]
    assert p_ranges.height == catalog.height and p_ranges.equals(p_one)
    assert (
        s_ranges.counts.quarantine_reasons
        == s_one.counts.quarantine_reasons
        == {
            "duplicate_sku_id": 1,
            "no_text": 1,
        }
    )
    where = [(r["reason"], r["row_number"], r["sku_id"], r["value"]) for r in q_ranges]
    assert sorted(where) == sorted((r["reason"], r["row_number"], r["sku_id"], r["value"]) for r in q_one)
    dup = next(r for r in q_ranges if r["reason"] == "duplicate_sku_id")
    assert (Path(dup["file"]).name, dup["row_number"], dup["value"]) == ("night.parquet", 1001, 8)
    assert dup["sku_id"] == catalog["sku_id"][7] and "already used on row 8" in dup["fix"]
    assert dup["raw"]["title"] == "Same id, another product"
    kept = p_ranges.filter(pl.col("sku_id") == catalog["sku_id"][7])["title"].item()
    assert kept == catalog["title"][7]


def test_a_night_killed_before_it_publishes_leaves_the_last_state(
    flipkart: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bucket of tonight's state is written, then the night dies before state/CURRENT is replaced:
    the last night's state stays the one a rerun starts from, and the rerun commits cleanly."""
    settings = Settings(state_dir=tmp_path / "state", shard_size=100, state_buckets=2)
    first, p1 = _night(flipkart, settings, flipkart["night"], tmp_path / "n1.parquet")
    current = tmp_path / "state" / "state" / "CURRENT"
    before = current.read_bytes()

    class Killed(BaseException):
        pass

    def die(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(night, "commit_night", die)
    with pytest.raises(Killed):
        _night(flipkart, settings, flipkart["night"], tmp_path / "n2.parquet")
    assert current.read_bytes() == before
    assert len(list((tmp_path / "state" / "state").iterdir())) == 3  # CURRENT, last night's, the killed one
    monkeypatch.undo()
    second, p2 = _night(flipkart, settings, flipkart["night"], tmp_path / "n3.parquet")
    assert second.incremental.mode == "incremental" and second.incremental.reason.endswith("carried")
    assert f"run {first.run_id}" in second.incremental.reason
    assert second.counts.carried == p1.height and p2.select(KEEP).equals(p1.select(KEEP))
    assert sorted(p.name for p in (tmp_path / "state" / "state").iterdir()) == sorted(
        ["CURRENT", second.run_id]
    )


def test_a_sku_lands_in_the_same_bucket_in_every_process() -> None:
    """The bucket of a sku_id is a stable hash (never Python's salted hash()): two processes with other
    hash seeds agree, every id is in range, and the ids spread over the buckets."""
    code = (
        "import polars as pl; from shelfwise.state import bucket_of; "
        "print(bucket_of(pl.Series([f'sku-{i}' for i in range(2000)]), 7).to_list())"
    )
    seen = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    here = bucket_of(pl.Series([f"sku-{i}" for i in range(2000)]), 7).to_list()
    assert seen[0] == seen[1] == f"{here}\n"
    counts = Counter(here)
    assert set(counts) == set(range(7)) and min(counts.values()) > 2000 / 7 * 0.8
