"""The nightly decision order (model -> LLM -> routing -> human lock -> audit) on hand-written values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shelfwise._decide import CurrentCategories, DecideOptions, LLMAnswer, Lock, ModelAnswers, decide
from shelfwise.errors import ConfigError


def _answers() -> ModelAnswers:
    # row 0: sure of the leaf; row 1: unsure of the leaf, sure of its parent; row 2: unsure at every level
    return ModelAnswers(
        leaf_ids=["t1", "t2", "m1"],
        leaf_paths=["Toys > Dolls > Fashion", "Toys > Dolls > Baby", "Home > Mugs > Tea"],
        leaf_depth=np.array([2, 2, 2]),
        leaf_confidence=np.array([0.97, 0.60, 0.40]),
        leaf_threshold=np.array([0.90, 0.90, 0.90]),
        confident_ids=["t1", "d", None],
        confident_paths=["Toys > Dolls > Fashion", "Toys > Dolls", None],
        confident_depth=np.array([2, 1, -1]),
        confident_confidence=np.array([0.97, 0.96, np.nan]),
        confident_threshold=np.array([0.90, 0.93, np.inf]),
    )


def _decide(options: DecideOptions, *, llm=None, locks=None, audit=None, floor_for=None, current=None):
    n = 3
    return decide(
        _answers(),
        current=CurrentCategories(paths=current or [None] * n, known=[True] * n, support=np.zeros(n)),
        llm=llm or [None] * n,
        locks=locks or [None] * n,
        audit=np.zeros(n, dtype=bool) if audit is None else audit,
        options=options,
        floor_for=floor_for,
    )


def test_leaf_contract_holds_the_top_label_and_carries_the_backoff_answer_alongside():
    d = _decide(DecideOptions(level="leaf"))
    assert d.category_path == ["Toys > Dolls > Fashion", "Toys > Dolls > Baby", "Home > Mugs > Tea"]
    np.testing.assert_allclose(d.confidence, [0.97, 0.60, 0.40])
    assert list(d.predicted_depth) == [2, 2, 2]
    assert d.route == ["auto", "review", "review"]  # auto means category_path itself is accepted
    assert d.confident_category_path == ["Toys > Dolls > Fashion", "Toys > Dolls", None]
    assert d.confident_confidence[1] == pytest.approx(0.96) and math.isnan(d.confident_confidence[2])


def test_backoff_level_puts_the_confident_node_in_the_contract_columns():
    d = _decide(DecideOptions(level="backoff"))
    assert d.category_path == ["Toys > Dolls > Fashion", "Toys > Dolls", "Home > Mugs > Tea"]
    assert list(d.predicted_depth) == [2, 1, 2]
    np.testing.assert_allclose(d.confidence[:2], [0.97, 0.96])
    assert d.route == ["auto", "auto", "review"]
    with pytest.raises(ConfigError, match="auto_accept_level"):
        _decide(DecideOptions(level="parent"))


def test_an_llm_answer_is_auto_accepted_only_when_calibrated_and_at_label_level():
    llm = [
        None,
        LLMAnswer("accepted", "t3", "Toys > Dolls > Rag", 2, 0.99, calibrated=False),
        LLMAnswer("accepted", "m", "Home > Mugs", 1, 0.99, calibrated=True, at_label_level=False),
    ]
    d = _decide(DecideOptions(level="leaf"), llm=llm)
    assert d.source == ["model", "llm", "llm"]
    assert d.category_path[1:] == ["Toys > Dolls > Rag", "Home > Mugs"]
    assert d.route == ["auto", "review", "review"]
    llm[1] = LLMAnswer("accepted", "t3", "Toys > Dolls > Rag", 2, 0.99, calibrated=True)
    llm[2] = LLMAnswer("failed_invalid")
    d = _decide(DecideOptions(level="leaf"), llm=llm)
    assert d.route == ["auto", "auto", "review"]
    assert d.queue[2] == "llm_failed" and d.reason[2] == "llm_failed_invalid"
    assert d.category_path[2] == "Home > Mugs > Tea"  # a failed LLM call keeps the model's answer


def test_human_lock_wins_and_audit_samples_only_machine_auto_accepts():
    locks = [None, Lock("x", "Toys > Puzzles", 1), None]
    d = _decide(DecideOptions(), locks=locks, audit=np.array([True, True, True]))
    assert d.source == ["model", "human", "model"]
    assert d.route == ["auto", "auto", "review"] and d.reason[1] == "human_decision"
    assert d.queue == ["audit", None, "low_confidence"]


def test_audit_floor_raises_the_bar_of_its_scope_only():
    def floor_for(paths):
        return np.array([0.98 if p.startswith("Toys") else 0.0 for p in paths])

    d = _decide(DecideOptions(level="backoff"), floor_for=floor_for)
    assert d.route == ["review", "review", "review"]  # 0.97 and 0.96 < the Toys floor 0.98
    np.testing.assert_allclose(d.threshold[:2], [0.98, 0.98])


def test_a_prediction_disagreeing_with_the_current_category_is_never_auto_accepted():
    d = _decide(DecideOptions(), current=["Home > Mugs", None, None])
    assert d.route[0] in ("suspect", "review") and d.route[0] != "auto"


def test_a_proven_backoff_answer_on_another_branch_flags_the_current_category():
    # row 1: the label is unsure, but "Toys > Dolls" is proven; the catalog files it under Home
    d = _decide(DecideOptions(level="leaf"), current=[None, "Home > Mugs", "Toys > Dolls"])
    assert d.route[1] == "suspect" and d.queue[1] == "suspect"
    assert d.reason[1] == "current_category_disagrees"
    assert d.route[2] == "review"  # no proven answer: a disagreement is only reviewed


def test_suspects_follow_their_own_rule_not_the_auto_accept_bar():
    # every item is filed under "Garden > Hoses"; the model predicts elsewhere. No auto bar can be met
    # (inf: the catalog proved none), yet a prediction more likely right than wrong, with the current
    # category's branch at most 1%, calls the current category suspect.
    answers = ModelAnswers(
        leaf_ids=["a", "b", "c", "d"],
        leaf_paths=["Toys > Dolls", "Toys > Cars", "Home > Mugs", "Toys > Kites"],
        leaf_depth=np.array([1, 1, 1, 1]),
        leaf_confidence=np.array([0.62, 0.62, 0.45, 0.62]),
        leaf_threshold=np.full(4, np.inf),
        confident_ids=[None] * 4,
        confident_paths=[None] * 4,
        confident_depth=np.full(4, -1),
        confident_confidence=np.full(4, np.nan),
        confident_threshold=np.full(4, np.inf),
    )
    d = decide(
        answers,
        current=CurrentCategories(
            paths=["Garden > Hoses"] * 4, known=[True] * 4, support=np.array([0.0, 0.03, 0.0, 0.01])
        ),
        llm=[None] * 4,
        locks=[None] * 4,
        audit=np.zeros(4, dtype=bool),
        options=DecideOptions(),
    )
    # 0: suspect; 1: the current branch keeps 3%: review; 2: the prediction is a coin flip: review;
    # 3: exactly at the 1% support limit: suspect
    assert d.route == ["suspect", "review", "review", "suspect"]
    assert d.queue[0] == "suspect" and d.reason[0] == "current_category_disagrees"
    # an explicit suspect_threshold still overrides the rule's confidence
    d2 = decide(
        answers,
        current=CurrentCategories(paths=["Garden > Hoses"] * 4, known=[True] * 4, support=np.zeros(4)),
        llm=[None] * 4,
        locks=[None] * 4,
        audit=np.zeros(4, dtype=bool),
        options=DecideOptions(suspect_threshold=0.7),
    )
    assert d2.route == ["review"] * 4
