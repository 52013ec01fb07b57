"""The audit raises the auto-accept bar of a scope it proves below target; a new model resets it."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from verification.audit_bar import (
    ALL,
    STATE_FILE,
    AuditBars,
    audit_answers,
    load_bars,
    next_bars,
    reset_bars,
    save_bars,
)


def _decisions(rows: list[tuple[float, str, bool]], *, model: str = "m1") -> pl.DataFrame:
    """Final audit answers: (shown confidence, shown path, reviewer kept it)."""
    return pl.DataFrame(
        {
            "queue": ["audit"] * len(rows),
            "kind": ["accept" if ok else "choose" for _, _, ok in rows],
            "final": [True] * len(rows),
            "shown_confidence": [c for c, _, _ in rows],
            "shown_category_id": [p for _, p, _ in rows],
            "shown_category_path": [p for _, p, _ in rows],
            "category_id": [None if ok else "other" for _, _, ok in rows],
            "category_path": [None if ok else "Other" for _, _, ok in rows],
            "model_version": [model] * len(rows),
        }
    )


def _night(rng: np.random.Generator) -> list[tuple[float, str, bool]]:
    rows = []
    for _ in range(80):  # Toys: right only 75% of the time below 0.97, always above
        c = float(rng.uniform(0.9, 1.0))
        rows.append((c, "Toys > Dolls", c >= 0.97 or rng.uniform() < 0.75))
    for _ in range(80):  # Home: always right
        rows.append((float(rng.uniform(0.9, 1.0)), "Home > Mugs", True))
    return rows


def test_a_branch_proven_below_target_gets_a_higher_bar_until_the_audit_agrees(tmp_path):
    rng = np.random.default_rng(0)
    answers = audit_answers(_decisions(_night(rng)), model_version="m1")
    assert answers.height == 160
    bars = next_bars(AuditBars(model_version="m1"), answers, target=0.95, model_version="m1")
    assert "Toys" in bars.raised and "Home" not in bars.floors
    toys_floor = bars.floors["Toys"]
    assert 0.9 < toys_floor <= 0.99
    # the audited Toys items above the new bar are on target
    ok = answers.filter(
        pl.col("shown_category_path").str.starts_with("Toys") & (pl.col("shown_confidence") >= toys_floor)
    )
    assert ok.get_column("correct").mean() >= 0.95
    np.testing.assert_allclose(
        bars.floor_for(["Toys > Dolls > Rag", "Home > Mugs", None]),
        [toys_floor, bars.floors.get(ALL, 0.0), bars.floors.get(ALL, 0.0)],
    )
    # the same answers the next night change nothing (the audit agrees with the raised bar)
    again = next_bars(bars, answers, target=0.95, model_version="m1")
    assert again.floors == bars.floors
    # the run summary / report headline says so; the state file round-trips
    assert "Toys" in bars.headline() and "Retraining resets it" in bars.headline()
    path = tmp_path / STATE_FILE
    save_bars(path, bars)
    assert load_bars(path, "m1").floors == bars.floors
    # a new model (train) starts without raised bars
    assert load_bars(path, "m2").floors == {}
    reset_bars(path)
    assert not path.exists() and load_bars(path, "m1").floors == {}


def test_an_audit_that_agrees_with_the_target_raises_nothing():
    rows = [(0.95 + 0.0004 * i, "Home > Mugs", i % 50 != 0) for i in range(100)]  # 98% right
    bars = next_bars(AuditBars(), audit_answers(_decisions(rows)), target=0.95, model_version="m1")
    assert bars.floors == {} and bars.headline() == ""


def test_a_scope_wrong_at_every_confidence_stops_auto_accepting():
    rows = [(0.9 + 0.001 * i, "Toys > Dolls", i % 2 == 0) for i in range(60)]  # 50% right everywhere
    bars = next_bars(AuditBars(), audit_answers(_decisions(rows)), target=0.95, model_version="m1")
    assert math.isinf(bars.floors["Toys"])  # the branch stops; with it stopped, nothing else is judged
    assert math.isinf(bars.floor_for(["Toys > Dolls > Rag"])[0]) and bars.floor_for(["Home"])[0] == 0.0
    assert "auto-accept stopped" in bars.headline()


def test_answers_on_another_model_or_other_queues_do_not_count():
    rows = [(0.99, "Toys > Dolls", False)] * 30
    d = _decisions(rows, model="old")
    assert audit_answers(d, model_version="new").is_empty()
    assert audit_answers(
        d.with_columns(pl.lit("low_confidence").alias("queue")), model_version="old"
    ).is_empty()
