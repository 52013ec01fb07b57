"""The train -> classify contract on real data: predictions schema, routing, queue, cache, quarantine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from verification import QueueStore

CONTRACT = [
    "sku_id",
    "category_id",
    "category_path",
    "confidence",
    "route",
    "candidates",
    "current_category_path",
    "taxonomy_version",
    "model_version",
    "run_id",
]
SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def _cli(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env_state = ["--state-dir", str(state)] if args[0] in ("train", "classify", "run", "report") else []
    proc = subprocess.run(
        [SHELFWISE, *args, *env_state], capture_output=True, text=True, timeout=900, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"shelfwise {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def flipkart_split(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real Flipkart products: 560 labelled for training, the rest as 'tonight's catalog' with 15 misfiled."""
    work = tmp_path_factory.mktemp("flipkart")
    df = pl.read_parquet(shared_data / "catalogs" / "flipkart.parquet").sample(
        fraction=1.0, shuffle=True, seed=7
    )
    train, new = df.head(560), df.slice(560)
    train.write_parquet(work / "labelled.parquet")
    paths = new.get_column("category_path").to_list()
    # Misfile 15 products: give them the category of a product from another top-level branch.
    misfiled = {}
    for i in range(15):
        j = next(k for k in range(len(paths)) if paths[k].split(" > ")[0] != paths[i].split(" > ")[0])
        misfiled[new["sku_id"][i]] = paths[j]
    new = new.with_columns(
        pl.col("sku_id").replace_strict(misfiled, default=pl.col("category_path")).alias("category_path")
    )
    new.select("sku_id", "title", "description", "brand", "category_path", "image_path").write_csv(
        work / "tonight.csv"
    )
    (work / "misfiled.json").write_text(json.dumps(misfiled))
    new_truth = df.slice(560).select("sku_id", "category_path")
    new_truth.write_parquet(work / "truth.parquet")
    return {
        "dir": work,
        "labelled": work / "labelled.parquet",
        "tonight": work / "tonight.csv",
        "truth": work / "truth.parquet",
        "misfiled": work / "misfiled.json",
        "taxonomy": shared_data / "taxonomies" / "flipkart_categories.txt",
        "images": shared_data,
    }


@pytest.fixture(scope="module")
def trained(flipkart_split: dict[str, Path]) -> dict[str, Path]:
    state = flipkart_split["dir"] / "state"
    model = flipkart_split["dir"] / "model"
    _cli(
        "train",
        "--taxonomy",
        str(flipkart_split["taxonomy"]),
        "--catalog",
        str(flipkart_split["labelled"]),
        "--model-dir",
        str(model),
        state=state,
    )
    return {**flipkart_split, "state": state, "model": model}


@pytest.mark.slow
def test_classify_writes_the_predictions_contract_and_fills_the_queue_once(trained: dict[str, Path]) -> None:
    out = trained["dir"] / "pred.parquet"
    proc = _cli(
        "classify",
        "--model-dir",
        str(trained["model"]),
        "--catalog",
        str(trained["tonight"]),
        "--images-root",
        str(trained["images"]),
        "--out",
        str(out),
        state=trained["state"],
    )
    pred = pl.read_parquet(out)
    assert pred.columns[: len(CONTRACT)] == CONTRACT
    assert pred.height == 179 and pred["sku_id"].n_unique() == 179
    assert pred["route"].is_in(["auto", "review", "suspect"]).all()
    assert pred["confidence"].is_between(0, 1).all()
    # candidates: best first, each a real taxonomy path; the chosen category is a real node path
    first = pred.row(0, named=True)
    scores = [c["score"] for c in first["candidates"]]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 2
    tax_paths = set(Path(trained["taxonomy"]).read_text().splitlines())
    assert set(pred["category_path"]).issubset(tax_paths)
    assert pred["taxonomy_version"].n_unique() == 1 and pred["taxonomy_version"][0].startswith("sha256:")

    # Quality a merchandiser would notice: auto-accepted items are mostly right, misfiled ones get caught.
    truth = pl.read_parquet(trained["truth"]).rename({"category_path": "truth"})
    joined = pred.join(truth, on="sku_id")
    correct_leaf = joined["category_path"] == joined["truth"]
    assert correct_leaf.mean() > 0.6, f"top-1 accuracy {correct_leaf.mean():.2f}"
    auto = joined.filter(pl.col("route") == "auto")
    if auto.height:
        exact = [t == p for p, t in zip(auto["category_path"], auto["truth"])]  # auto: category_path itself
        assert sum(exact) / len(exact) >= 0.85
    misfiled = json.loads(trained["misfiled"].read_text())
    caught = joined.filter(pl.col("sku_id").is_in(list(misfiled)))["route"].is_in(["suspect", "review"]).sum()
    assert caught >= 12, f"only {caught} of 15 misfiled products left auto"

    summary = json.loads(next((trained["state"] / "runs").glob("*/summary.json")).read_text())
    assert summary["counts"]["classified"] == 179
    assert summary["counts"]["auto"] + summary["counts"]["review"] + summary["counts"]["suspect"] == 179
    assert "LLM step off" in summary["llm"]["note"]
    store = QueueStore(f"sqlite:///{trained['state'] / 'queue.db'}")

    def open_items() -> dict[str, int]:
        return {q: c["open"] for q, c in store.queue_counts().items() if c["open"]}

    assert open_items() == {q: n for q, n in summary["counts"]["queued"].items() if n}
    assert "review" in proc.stdout or "suspect" in proc.stdout

    # Same night again: nothing re-embedded, nothing duplicated in the queue.
    out2 = trained["dir"] / "pred2.parquet"
    _cli(
        "classify",
        "--model-dir",
        str(trained["model"]),
        "--catalog",
        str(trained["tonight"]),
        "--images-root",
        str(trained["images"]),
        "--out",
        str(out2),
        state=trained["state"],
    )
    runs = sorted((trained["state"] / "runs").glob("*/summary.json"))
    second = json.loads(runs[-1].read_text())
    # unchanged SKUs keep their prediction: nothing embedded, nothing scored, every SKU still predicted
    assert second["embedding"]["misses"] == 0 and second["counts"]["carried"] == 179
    assert second["incremental"]["mode"] == "incremental" and second["counts"]["rescored"] == 0
    assert second["counts"]["unchanged"] == 179 and second["counts"]["new"] == 0
    assert open_items() == {q: n for q, n in summary["counts"]["queued"].items() if n}
    assert pl.read_parquet(out2).select("sku_id", "category_id").equals(pred.select("sku_id", "category_id"))

    # The catalog team fixes the misfiled products upstream: the next run auto-accepts those it is sure
    # of, and their stale suspect items leave the queue (closed as superseded, nothing learned from them).
    fixed = (
        pl.read_csv(trained["tonight"])
        .drop("category_path")
        .join(pl.read_parquet(trained["truth"]), on="sku_id")
    )
    fixed.write_csv(trained["dir"] / "fixed.csv")
    out3 = trained["dir"] / "pred3.parquet"
    _cli(
        "classify",
        "--model-dir",
        str(trained["model"]),
        "--catalog",
        str(trained["dir"] / "fixed.csv"),
        "--images-root",
        str(trained["images"]),
        "--out",
        str(out3),
        state=trained["state"],
    )
    third = json.loads(max((trained["state"] / "runs").glob("*/summary.json")).read_text())
    was_open = set(pred.filter(pl.col("route") != "auto")["sku_id"])
    now_auto = set(pl.read_parquet(out3).filter(pl.col("queue").is_null())["sku_id"])
    closed = was_open & now_auto
    assert len(closed & set(misfiled)) >= 5, "fixing the categories upstream should clear suspect items"
    assert sum(third["enqueue"]["superseded"].values()) == len(closed)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT sku_id, final_kind, decided_by FROM review_items WHERE status = 'decided'"
        ).all()
    assert {r[0] for r in rows} == closed and {(r[1], r[2]) for r in rows} == {("superseded", None)}
    assert store.labels().height == 0


@pytest.mark.slow
def test_bad_rows_are_quarantined_and_the_run_goes_on(trained: dict[str, Path], tmp_path: Path) -> None:
    good = pl.read_csv(trained["tonight"]).head(20)
    bad = pl.DataFrame(
        {
            "sku_id": [None, "no-text", good["sku_id"][0]],
            "title": [good["title"][1], None, "duplicate of the first row"],
            "description": [None, None, None],
            "brand": [None, None, None],
            "category_path": [None, None, None],
            "image_path": [None, None, None],
        },
        schema=good.schema,
    )
    cat = tmp_path / "mixed.csv"
    pl.concat([good, bad]).write_csv(cat)
    out = tmp_path / "pred.parquet"
    state = tmp_path / "state"
    _cli(
        "classify",
        "--model-dir",
        str(trained["model"]),
        "--catalog",
        str(cat),
        "--out",
        str(out),
        "--no-enqueue",
        state=state,
    )
    assert pl.read_parquet(out).height == 20
    summary = json.loads(next((state / "runs").glob("*/summary.json")).read_text())
    assert summary["counts"]["quarantined"] == 3
    records = [json.loads(line) for line in Path(summary["quarantine_path"]).read_text().splitlines()]
    assert sorted(r["row_number"] for r in records) == [21, 22, 23]
    assert all(r["reason"] and r["raw"] for r in records)


def test_missing_model_and_missing_column_give_clear_errors(tmp_path: Path, shared_data: Path) -> None:
    proc = _cli(
        "classify",
        "--model-dir",
        str(tmp_path / "nope"),
        "--catalog",
        str(shared_data / "catalogs" / "amazon_uk.parquet"),
        "--out",
        str(tmp_path / "p.parquet"),
        state=tmp_path / "s",
        check=False,
    )
    assert proc.returncode == 2
    assert "shelfwise train" in proc.stderr and "nope" in proc.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_review_commands_find_the_nights_items_in_the_state_dir_of_shelfwise_toml(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A shop sets state_dir in shelfwise.toml (no flag, no environment variable): the night fills the
    queue there, and `shelfwise review stats` and the review app open that very queue."""
    import base64
    import os
    import time
    import urllib.request

    shop, state = tmp_path / "shop", tmp_path / "shop-state"
    shop.mkdir()
    (shop / "shelfwise.toml").write_text(f'state_dir = "{state.as_posix()}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFWISE_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [SHELFWISE, *args], cwd=shop, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        assert proc.returncode == 0, f"shelfwise {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    out = tmp_path / "pred.parquet"
    cli(
        "classify",
        "--model-dir",
        str(trained["model"]),
        "--catalog",
        str(trained["tonight"]),
        "--out",
        str(out),
    )
    assert (state / "queue.db").is_file() and not (shop / ".shelfwise").exists()
    queued = dict(
        pl.read_parquet(out).filter(pl.col("queue").is_not_null()).group_by("queue").len().iter_rows()
    )
    assert queued, "the night sent items to review"

    stats = cli("review", "stats").stdout
    for queue, n in queued.items():
        row = next(line for line in stats.splitlines() if f" {queue} " in line)
        assert row.split("│")[2].strip() == str(n), stats  # the open column

    cli("review", "add-user", "ann", "--password", "pw-ann-12345")
    port = _free_port()
    app = subprocess.Popen(
        [SHELFWISE, "review", "serve", "--taxonomy", str(trained["taxonomy"]), "--port", str(port)],
        cwd=shop,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        auth = "Basic " + base64.b64encode(b"ann:pw-ann-12345").decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/queues", headers={"Authorization": auth}
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    counts = json.loads(resp.read())
                break
            except OSError:
                assert app.poll() is None and time.monotonic() < deadline, "the review app did not start"
                time.sleep(0.5)
    finally:
        app.terminate()
        app.wait(timeout=20)
    assert {q: counts[q]["open"] for q in queued} == queued
