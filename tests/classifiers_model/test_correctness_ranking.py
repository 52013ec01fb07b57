"""The correctness score as a competing leaf ranking (issue 22, item 2; setting ``rankings``).

Synthetic out-of-fold rows where the truth is known: the correctness ranking wins when it is clearly
better and each ranking is proven on half the leaf's delta; the default keeps one ranking on the whole
delta; the cross-fitted score of a row never depends on that row's own label. Then a real model trained
with the option on: the winner is recorded, and a saved model reloads and routes identically.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from classifiers._model.correctness import check_rankings, fit_correctness
from classifiers._model.proof import OutOfFold, fit_model_thresholds
from classifiers._model.rerank import LabelInfo
from classifiers.calibration import DELTA
from classifiers.hierarchy import NodeIndex
from classifiers.selective import BACKOFF_DELTA_SHARE, fixed_sequence_test
from shelfwise.errors import ConfigError

LEAF_DELTA = DELTA * (1.0 - BACKOFF_DELTA_SHARE)
K = 10


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeIndex, np.ndarray]:
    """Ten labels under two parents."""
    from taxonomy import load_taxonomy

    f = tmp_path_factory.mktemp("tax") / "paths.txt"
    leaves = [f"P{i % 2} > L{i}" for i in range(K)]
    f.write_text("\n".join(["P0", "P1", *leaves]) + "\n")
    tax = load_taxonomy(f)
    ids = [tax.find_path(p).id for p in leaves]
    index = NodeIndex.from_taxonomy(tax, ids)
    return index, index.position(ids)


def _rows(
    seed: int, n: int = 4000, *, informative: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p_raw, y, hidden ease, right): the stacker's top score says nothing about being right (unless
    ``informative``: then it follows the ease); a hidden ease (which a correctness score can see) says
    much."""
    rng = np.random.default_rng(seed)
    y = rng.integers(K, size=n)
    ease = rng.uniform(size=n)
    right = rng.uniform(size=n) < 0.2 + ease  # the easiest fifth always right
    top = np.where(right, y, (y + 1 + rng.integers(K - 1, size=n)) % K)
    conf = 0.3 + 0.65 * ease if informative else rng.uniform(0.3, 0.95, size=n)
    p_raw = np.repeat(((1.0 - conf) / (K - 1))[:, None], K, axis=1)
    p_raw[np.arange(n), top] = conf
    return p_raw, y, ease, right


def test_default_proves_the_confidence_alone_on_the_whole_leaf_delta(tree):
    index, label_pos = tree
    p_raw, y, _, right = _rows(0, informative=True)
    fit = fit_model_thresholds(OutOfFold(p_raw, p_raw, y), index=index, label_pos=label_pos, calibrator=None)
    assert fit.ranking == "confidence" and fit.thresholds.ranking == "confidence"
    compared = fit.report["rankings_compared"]
    assert list(compared) == ["confidence"]
    assert compared["confidence"]["delta"] == pytest.approx(LEAF_DELTA)
    alone = fixed_sequence_test(p_raw.max(axis=1), right, target_precision=0.95, delta=LEAF_DELTA)
    assert compared["confidence"]["proven_share"] == pytest.approx(alone.fit.coverage, abs=1e-4)
    assert fit.report["proven_share"] == compared["confidence"]["proven_share"] > 0.1


def test_a_clearly_better_second_ranking_wins_each_tested_at_half_the_delta(tree, capsys, monkeypatch):
    index, label_pos = tree
    p_raw, y, ease, right = _rows(1)
    rng = np.random.default_rng(2)
    better = ease + rng.normal(0.0, 0.02, size=len(y))
    fit = fit_model_thresholds(
        OutOfFold(p_raw, p_raw, y),
        index=index,
        label_pos=label_pos,
        calibrator=None,
        rankings={"correctness": better},
    )
    compared = fit.report["rankings_compared"]
    assert set(compared) == {"confidence", "correctness"}
    for name, scores in (("confidence", p_raw.max(axis=1)), ("correctness", better)):
        assert compared[name]["delta"] == pytest.approx(LEAF_DELTA / 2)
        half = fixed_sequence_test(scores, right, target_precision=0.95, delta=LEAF_DELTA / 2)
        assert compared[name]["proven_share"] == pytest.approx(half.fit.coverage, abs=1e-4)
    assert fit.ranking == "correctness" == fit.thresholds.ranking == fit.report["ranking"]
    assert compared["correctness"]["proven_share"] > compared["confidence"]["proven_share"] + 0.2
    # the cut is on the correctness score's own scale, and what it accepts keeps the promise
    bars = fit.thresholds.for_nodes(np.array(index.ids, dtype=object)[label_pos][p_raw.argmax(axis=1)])
    np.testing.assert_array_equal(fit.leaf_accepted, better >= bars)
    assert right[fit.leaf_accepted].mean() >= 0.95
    # what `train` prints: the winner and each ranking's proven share
    from types import SimpleNamespace

    from rich.console import Console

    import shelfwise.cli._common as common

    summary = SimpleNamespace(
        model_version="v",
        rows=len(y),
        labelled=len(y),
        human_labels=0,
        quarantined=0,
        fit_report={"heldout": fit.report},
        model_dir="m",
        taxonomy_version="t",
        quarantine_path="q",
    )
    monkeypatch.setattr(common, "console", Console(stderr=True, width=200))  # one line per row
    common.print_train_summary(summary)
    shown = " ".join(capsys.readouterr().err.split())
    c, r = compared["confidence"]["proven_share"], compared["correctness"]["proven_share"]
    assert f"correctness (confidence {c:.3f}, correctness {r:.3f})" in shown


def _scorers(p_raw: np.ndarray, right: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Two base scorers: 'lex' puts its top on the stacker's label mostly when that label is right;
    'sem' is noise."""
    rng = np.random.default_rng(seed)
    n = len(right)
    top = p_raw.argmax(axis=1)
    lex = rng.normal(0.0, 1.0, size=(n, K))
    agree = np.where(right, rng.uniform(size=n) < 0.9, rng.uniform(size=n) < 0.15)
    lex[np.arange(n), top] = np.where(agree, 4.0, -4.0)
    return {"lex": lex, "sem": rng.normal(0.0, 1.0, size=(n, K))}


def test_the_correctness_score_is_cross_fitted_and_reads_scorer_agreement(tree):
    index, label_pos = tree
    p_raw, y, _, right = _rows(3, n=1500)
    scores = _scorers(p_raw, right, 4)
    info = LabelInfo.of_labels(index, label_pos, y, K)
    oof, model = fit_correctness(p_raw, y, scores, scorer_names=["sem", "lex"], info=info)
    assert roc_auc_score(right, oof) > 0.85
    assert roc_auc_score(right, p_raw.max(axis=1)) < 0.6
    # a row's score comes from models that never saw its label: flipping that label leaves it as is
    i = int(np.flatnonzero(right)[0])
    y2 = y.copy()
    y2[i] = (y[i] + 1) % K
    oof2, _ = fit_correctness(p_raw, y2, scores, scorer_names=["sem", "lex"], info=info)
    assert oof2[i] == pytest.approx(oof[i], abs=1e-12)
    assert not np.allclose(np.delete(oof2, i), np.delete(oof, i))
    # the final model scores new rows from the same inputs
    fresh = model.score(p_raw[:50], {k: v[:50] for k, v in scores.items()}, info)
    assert fresh.shape == (50,) and ((fresh >= 0) & (fresh <= 1)).all()


def test_rankings_setting_and_option_are_checked(monkeypatch):
    from shelfwise.settings import Settings

    assert Settings().rankings == ["confidence"]
    assert Settings(rankings=["correctness", "confidence"]).rankings == ["confidence", "correctness"]
    monkeypatch.setenv("SHELFWISE_RANKINGS", '["confidence", "correctness"]')
    assert Settings().rankings == ["confidence", "correctness"]
    with pytest.raises(ValidationError, match="'confidence' always competes"):
        Settings(rankings=["correctness"])
    with pytest.raises(ValidationError):
        Settings(rankings=["confidence", "margin"])
    assert check_rankings(["correctness", "confidence"]) == ("confidence", "correctness")
    with pytest.raises(ConfigError, match="use \\['confidence'\\] \\(default\\)"):
        check_rankings(["confidence", "margin"])


def test_train_flag_passes_the_setting_and_a_bad_value_stops_before_training(tmp_path):
    from typer.testing import CliRunner

    from shelfwise.cli import app
    from shelfwise.cli._common import build_settings

    settings = build_settings(state_dir=tmp_path, rankings=["confidence", "correctness"])
    assert settings.rankings == ["confidence", "correctness"]
    assert build_settings(state_dir=tmp_path).rankings == ["confidence"]
    args = ["train", "--taxonomy", "t.txt", "--catalog", "c.csv", "--model-dir", str(tmp_path / "m")]
    bad = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path), "--ranking", "margin"])
    assert bad.exit_code == 2
    assert "rankings" in bad.output and "correctness" in bad.output
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def flipkart_with_correctness(flipkart_frame, flipkart_taxonomy, minilm, embedding_cache):
    """A model trained as `train` does (default options) with ``rankings=("confidence",
    "correctness")`` on 85% of the bundled Flipkart rows, and the other 15%."""
    import polars as pl

    from classifiers.model import CategoryModel

    held = pl.Series(np.random.default_rng(0).uniform(size=flipkart_frame.height) < 0.15)
    model = CategoryModel(random_state=0, rankings=("confidence", "correctness"))
    model.fit(flipkart_frame.filter(~held), flipkart_taxonomy, embedder=minilm, cache=embedding_cache)
    return model, flipkart_frame.filter(held)


@pytest.mark.slow
def test_a_model_with_the_option_records_its_winner_and_routes_the_same_after_reload(
    flipkart_with_correctness, minilm, embedding_cache, tmp_path
):
    import json

    from classifiers.model import CategoryModel

    model, test = flipkart_with_correctness
    heldout = model.fit_report_["heldout"]
    compared = heldout["rankings_compared"]
    assert set(compared) == {"confidence", "correctness"}
    assert all(v["delta"] == pytest.approx(LEAF_DELTA / 2) for v in compared.values())
    # on these ~640 out-of-fold rows the agreement of the scorers proves more (0.741 vs 0.697 measured)
    assert heldout["ranking"] == "correctness" == model.thresholds_.ranking
    assert compared["correctness"]["proven_share"] > compared["confidence"]["proven_share"]
    # the deployed share: the winner's proven cut, less any category provably below target under it
    assert 0.3 < heldout["proven_share"] <= compared["correctness"]["proven_share"]
    model.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["fit_report"]["heldout"]["ranking"] == "correctness" == manifest["thresholds"]["ranking"]
    before = model.predict(test, embedder=minilm, cache=embedding_cache)
    after = CategoryModel.load(tmp_path / "m").predict(test, embedder=minilm, cache=embedding_cache)
    for field in ("leaf_ids", "confident_ids", "predicted_ids"):
        assert list(getattr(after, field)) == list(getattr(before, field))
    for field in ("confidence", "leaf_threshold", "confident_confidence"):
        np.testing.assert_allclose(getattr(after, field), getattr(before, field))
    # the cut is on the correctness score: a row's bar is its own confidence where the score clears it,
    # inf where it does not; the confidence keeps its meaning (the calibrated top label probability)
    accepted = before.leaf_confidence >= before.leaf_threshold
    assert 0.3 < accepted.mean() < 1.0
    assert np.isinf(before.leaf_threshold[~accepted]).all()
    np.testing.assert_allclose(before.leaf_threshold[accepted], before.leaf_confidence[accepted])
    np.testing.assert_allclose(before.confidence, before.scores[:, 0])
    score = model.predict_correctness(test, embedder=minilm, cache=embedding_cache)
    np.testing.assert_array_equal(accepted, score >= model.thresholds_.for_nodes(before.leaf_ids))
    truth = np.asarray(test.get_column("category_path").to_list(), dtype=object)
    got = np.asarray([model.index_.paths[model.index_.position([i])[0]] for i in before.leaf_ids])
    assert (got == truth)[accepted].mean() >= 0.9
