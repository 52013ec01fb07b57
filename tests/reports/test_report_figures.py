"""Every headline figure of the report, cross-checked against an independent count on the same real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from shelfwise.reports import read_history, report_markdown

pytestmark = pytest.mark.slow


def _decisions(nights: Any) -> list[dict[str, Any]]:
    engine = sa.create_engine(nights.settings.queue_url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text("select * from decisions order by id")).mappings()]
    engine.dispose()
    return rows


def _chosen(d: dict[str, Any]) -> str | None:
    return d["shown_category_id"] if d["kind"] == "accept" else d["category_id"]


def _same_branch(a: str, b: str) -> bool:
    a, b = a.casefold(), b.casefold()
    return a == b or a.startswith(b + " > ") or b.startswith(a + " > ")


def _report_dir(nights: Any, i: int) -> Path:
    return nights.reports[i].parent


def test_history_has_one_row_per_run_with_the_run_counts(nights: Any) -> None:
    h = read_history(nights.settings)
    assert h["run_id"].to_list() == [r["run_id"] for r in nights.runs]
    for row, summary in zip(h.iter_rows(named=True), nights.runs, strict=True):
        c = summary["counts"]
        assert row["classified"] == c["classified"] and row["seen"] == c["seen"]
        assert row["quarantined"] == c["quarantined"] and row["auto"] == c["auto"]
        assert row["auto_rate"] == pytest.approx(c["auto"] / c["classified"])
    # night 1: 3 broken rows quarantined (blank SKU id, two rows without any text)
    assert h["quarantined"][0] == 3
    reasons = pl.read_parquet(_report_dir(nights, 0) / "quarantine_reasons.parquet")
    dropped = reasons.filter(pl.col("outcome") == "row dropped")
    assert (
        dict(dropped.group_by("reason").agg(pl.col("count").sum()).iter_rows())
        == nights.runs[0]["counts"]["quarantine_reasons"]
    )


def test_auto_accept_precision_is_recomputed_from_the_audit_log(nights: Any) -> None:
    run2 = nights.runs[1]
    audit = [
        d
        for d in _decisions(nights)
        if d["queue"] == "audit"
        and d["final"]
        and d["kind"] in ("accept", "choose")
        and d["model_version"] == run2["model_version"]
    ]
    assert len(audit) >= 20, "the simulated reviewers answered the audit queue"
    correct = sum(_chosen(d) == d["shown_category_id"] for d in audit)
    assert 0 < correct < len(audit), "some audit answers overrule the model (every 7th answer does)"
    ci = binomtest(correct, len(audit)).proportion_ci(method="wilson")
    row = read_history(nights.settings).row(1, named=True)
    assert row["audit_answers"] == len(audit)
    assert row["precision"] == pytest.approx(correct / len(audit))
    assert row["precision_lo"] == pytest.approx(ci.low) and row["precision_hi"] == pytest.approx(ci.high)
    html = nights.reports[1].read_text()
    c = run2["counts"]
    expected = (
        f"Tonight {c['classified']} products were classified; {c['auto'] / c['classified']:.0%} "
        f"auto-accepted "
        f"at an estimated {correct / len(audit):.0%} precision (95% CI "
        f"{ci.low * 100:.0f}–{ci.high * 100:.0f}%)"
    )
    assert expected in html
    # model vs reviewers, over every final answer
    answers = [d for d in _decisions(nights) if d["final"] and d["kind"] in ("accept", "choose")]
    agree = sum(_chosen(d) == d["shown_category_id"] for d in answers)
    assert row["reviewer_answers"] == len(answers)
    assert row["model_agreement"] == pytest.approx(agree / len(answers))


def test_churn_matches_a_plain_dict_comparison_of_the_two_nights(nights: Any) -> None:
    first = dict(
        pl.read_parquet(nights.runs[0]["predictions_path"]).select("sku_id", "category_id").iter_rows()
    )
    second = dict(
        pl.read_parquet(nights.runs[1]["predictions_path"]).select("sku_id", "category_id").iter_rows()
    )
    both = set(first) & set(second)
    moved = sum(first[s] != second[s] for s in both)
    assert moved > 0, "reviewers' corrections are kept on night 2, so some products move"
    row = read_history(nights.settings).row(1, named=True)
    assert row["churn_moved"] == moved and row["churn_rate"] == pytest.approx(moved / len(both))
    assert row["new_skus"] == len(set(second) - set(first)) == 40
    assert row["gone_skus"] == len(set(first) - set(second)) == 20
    flows = pl.read_parquet(_report_dir(nights, 1) / "churn.parquet")
    assert flows["count"].sum() == moved
    assert f"{moved} of {len(both)} products" in nights.reports[1].read_text()
    # the first night has nothing to compare with, and says so
    assert read_history(nights.settings).row(0, named=True)["churn_moved"] is None
    assert "first run" in nights.reports[0].read_text()


def test_catalog_health_figures_match_the_predictions(nights: Any) -> None:
    pred = pl.read_parquet(nights.runs[1]["predictions_path"])
    pairs = [(p, c) for p, c in zip(pred["category_path"], pred["current_category_path"], strict=True) if c]
    disagree = sum(not _same_branch(p, c) for p, c in pairs)
    row = read_history(nights.settings).row(1, named=True)
    assert row["suspect_rate"] == pytest.approx(disagree / len(pairs))
    assert row["uncategorized"] == pred.height - len(pairs) == 3  # 8 uncategorized on night 1, 5 dropped out
    # reviewers confirm a suspect when they move the product off its current branch
    sus = [
        d
        for d in _decisions(nights)
        if d["queue"] == "suspect"
        and d["final"]
        and d["kind"] in ("accept", "choose")
        and d["current_category_path"]
    ]
    confirmed = sum(not _same_branch(d["category_path"], d["current_category_path"]) for d in sus)
    assert row["suspect_answers"] == len(sus) > 0
    assert row["confirmed_misfile_rate"] == pytest.approx(confirmed / len(sus))
    # the 4 products on 'Discontinued > ...' paths are reported as left on deprecated nodes
    assert row["deprecated_items"] == 4
    deprecated = pl.read_parquet(_report_dir(nights, 1) / "deprecated_paths.parquet")
    assert deprecated["current_category_path"].str.starts_with("Discontinued > ").all()


def test_empty_taxonomy_nodes_match_a_set_difference(nights: Any, shared_data: Path) -> None:
    paths = (shared_data / "taxonomies" / "flipkart_categories.txt").read_text().splitlines()
    pred = pl.read_parquet(nights.runs[1]["predictions_path"])
    used: set[str] = set()
    for p in pred["category_path"].to_list() + pred["current_category_path"].drop_nulls().to_list():
        parts = p.split(" > ")
        used.update(" > ".join(parts[:i]) for i in range(1, len(parts) + 1))
    empty = [p for p in paths if p.strip() and p not in used]
    row = read_history(nights.settings).row(1, named=True)
    assert row["taxonomy_nodes"] == len([p for p in paths if p.strip()])
    assert row["empty_nodes"] == len(empty)
    nodes = pl.read_parquet(_report_dir(nights, 1) / "taxonomy_nodes.parquet")
    assert set(nodes.filter(~pl.col("in_use"))["category_path"]) == set(empty)


def test_reviewer_agreement_and_backlog(nights: Any) -> None:
    decisions = _decisions(nights)
    by_item: dict[int, dict[str, str | None]] = {}
    for d in decisions:
        if d["kind"] in ("accept", "choose"):
            by_item.setdefault(d["item_id"], {}).setdefault(d["reviewer"], _chosen(d))
    doubles = [list(v.values())[:2] for v in by_item.values() if len(v) >= 2]
    # the fixture has the first reviewer dispute 4 suspect items on purpose (DISPUTED_SUSPECTS), and
    # hands every disputed suspect to a second reviewer: at least 4 pairs, whatever the model answered
    assert len(doubles) == len(nights.double_checked) >= 4
    kappa = cohen_kappa_score([a for a, _ in doubles], [b for _, b in doubles])
    row = read_history(nights.settings).row(1, named=True)
    assert row["double_checked"] == len(doubles)
    assert row["kappa"] == pytest.approx(kappa)
    assert row["decisions"] == len(decisions) and row["reviewers"] == 3
    engine = sa.create_engine(nights.settings.queue_url)
    with engine.connect() as conn:
        open_items = conn.execute(
            sa.text("select count(*) from review_items where status <> 'decided'")
        ).scalar_one()
    engine.dispose()
    assert open_items > 0, "40% of the low-confidence queue is left for later"
    assert row["open_backlog"] == open_items
    stats = pl.read_parquet(_report_dir(nights, 1) / "reviewer_stats.parquet")
    assert dict(stats.select("reviewer", "decisions").iter_rows()) == {
        who: sum(d["reviewer"] == who for d in decisions) for who in ("alice", "bob", "chandra")
    }
    backlog = pl.read_parquet(_report_dir(nights, 1) / "backlog.parquet")
    assert backlog["open_items"].sum() == open_items


def test_report_folder_has_the_bi_tables_and_the_markdown(nights: Any) -> None:
    folder = _report_dir(nights, 1)
    assert pl.read_parquet(_report_dir(nights, 0) / "quarantine_reasons.parquet").height > 0
    assert pl.read_parquet(folder / "quarantine_reasons.parquet").is_empty()  # night 2 had no bad rows
    for name in (
        "volumes",
        "queues",
        "churn",
        "category_distribution",
        "confusion",
        "reviewer_stats",
        "backlog",
        "taxonomy_nodes",
        "agreement",
        "calibration",
        "headline",
    ):
        frame = pl.read_parquet(folder / f"{name}.parquet")
        assert frame.height > 0, name
    volumes = dict(pl.read_parquet(folder / "volumes.parquet").select("metric", "value").iter_rows())
    c = nights.runs[1]["counts"]
    assert volumes["classified"] == c["classified"] and volumes["queued_audit"] == c["queued"]["audit"]
    dist = pl.read_parquet(folder / "category_distribution.parquet").filter(pl.col("level") == "top_level")
    assert dist["current_count"].sum() == c["classified"]
    assert dist["current_share"].sum() == pytest.approx(1.0)
    md = report_markdown(nights.runs[1]["run_id"], nights.settings)
    assert md.startswith(f"# Catalog governance report: run `{nights.runs[1]['run_id']}`")
    assert "estimated precision (95% CI)" in md and "data:image" not in md
    assert (folder / "report.md").read_text() == md
    summary = json.loads((nights.settings.runs_dir / nights.runs[1]["run_id"] / "summary.json").read_text())
    assert summary["run_id"] == nights.runs[1]["run_id"]


def test_what_if_a_higher_confidence_bar_matches_the_audit_answers(nights: Any) -> None:
    """Governance asks 'what would it take to be surely above 95%?': every row re-counted by hand."""
    run2 = nights.runs[1]
    audit = [
        d
        for d in _decisions(nights)
        if d["queue"] == "audit"
        and d["final"]
        and d["kind"] in ("accept", "choose")
        and d["model_version"] == run2["model_version"]
    ]
    pred = pl.read_parquet(run2["predictions_path"])
    table = pl.read_parquet(_report_dir(nights, 1) / "what_if_threshold.parquet")
    assert table.height >= 3 and table["min confidence"].is_sorted()
    assert table["audit answers"][0] == len(audit)  # the first row is tonight's policy
    for row in table.iter_rows(named=True):
        t = row["min confidence"]
        kept = [d for d in audit if d["shown_confidence"] >= t]
        assert row["audit answers"] == len(kept)
        assert row["estimated precision"] == pytest.approx(
            sum(_chosen(d) == d["shown_category_id"] for d in kept) / len(kept)
        )
        auto = pred.filter((pl.col("route") == "auto") & (pl.col("confidence") >= t)).height
        assert row["coverage"] == pytest.approx(auto / pred.height)
    assert table["coverage"].is_sorted(descending=True)
    assert "What if auto-accept required a higher confidence?" in nights.reports[1].read_text()
