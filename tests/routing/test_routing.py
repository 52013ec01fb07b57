"""Routing and queue selection on hand-written values."""

import numpy as np

from verification.routing import audit_sample, paths_agree, priority, route, select_for_queues


def test_confident_matching_prediction_is_auto_accepted():
    r = route(np.array([0.97]), np.array([0.9]), ["Toys > Dolls"], ["Toys > Dolls"])
    assert (r.route, r.queue) == (["auto"], [None])


def test_confident_prediction_on_another_branch_flags_current_category_as_suspect():
    r = route(
        np.array([0.97, 0.97]),
        np.array([0.9, 0.9]),
        ["Toys > Dolls", "Toys > Dolls"],
        ["Kitchen > Pans", None],
    )
    assert r.route == ["suspect", "auto"]
    assert r.queue == ["suspect", None]
    assert r.reason[0] == "current_category_disagrees"


def test_low_confidence_goes_to_review_even_when_it_disagrees():
    r = route(np.array([0.4, 0.4]), np.array([0.9, 0.9]), ["A > B", "A > B"], ["A > B", "C"])
    assert r.route == ["review", "review"]
    assert r.queue == ["low_confidence", "low_confidence"]
    assert r.reason == ["low_confidence", "low_confidence_disagrees"]


def test_per_node_thresholds_are_applied_item_by_item():
    r = route(np.array([0.8, 0.8]), np.array([0.7, 0.95]), ["A", "B"], [None, None])
    assert r.route == ["auto", "review"]


def test_backoff_to_an_ancestor_of_the_current_category_is_not_a_disagreement():
    assert paths_agree("Toys > Dolls", "Toys > Dolls > Fashion Dolls")
    assert paths_agree("Toys > Dolls > Fashion Dolls", "toys >  dolls")
    assert not paths_agree("Toys > Dolls", "Toys > Games")
    r = route(np.array([0.99]), np.array([0.5]), ["Toys > Dolls"], ["Toys > Dolls > Fashion Dolls"])
    assert r.route == ["auto"]


def test_current_category_missing_from_taxonomy_is_suspect_when_confident():
    r = route(np.array([0.99]), np.array([0.5]), ["Toys"], ["Old > Deprecated"], current_known=[False])
    assert r.route == ["suspect"]
    assert r.reason == ["current_category_unknown"]


def test_suspect_threshold_can_be_stricter_than_auto():
    r = route(np.array([0.9]), np.array([0.8]), ["A"], ["B"], suspect_thresholds=np.array([0.95]))
    assert r.route == ["review"]


def test_priority_ranks_uncertain_and_expensive_items_first():
    conf = np.array([0.9, 0.2, 0.95, 0.2])
    queues = ["low_confidence", "low_confidence", "suspect", "low_confidence"]
    p = priority(queues, conf, price=np.array([0, 0, 0, 1000]))
    assert p[1] > p[0]  # more uncertain first
    assert p[3] > p[1]  # same uncertainty, expensive first
    assert p[2] > p[0]  # a confident suspect outranks a nearly sure review item


def test_selection_keeps_top_items_per_queue_within_capacity():
    queues = ["low_confidence"] * 4 + ["suspect"] * 2 + [None]
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 1.0])
    keep = select_for_queues(queues, scores, capacity={"low_confidence": 2, "suspect": 5})
    assert keep.tolist() == [False, True, False, True, True, True, False]


def test_audit_sample_is_deterministic_and_close_to_the_rate():
    skus = [f"sku-{i}" for i in range(20000)]
    a = audit_sample(skus, "run-1", rate=0.05)
    b = audit_sample(skus, "run-1", rate=0.05)
    assert (a == b).all()
    assert 0.04 < a.mean() < 0.06
    assert not audit_sample(skus, "run-1", rate=0.0).any()
    assert (audit_sample(skus, "run-2", rate=0.05) != a).any()


def test_a_current_category_the_model_still_finds_plausible_is_reviewed_not_called_suspect():
    r = route(
        np.array([0.8, 0.8]),
        np.array([0.5, 0.5]),
        ["A > B", "A > B"],
        ["A > C", "A > C"],
        current_support=np.array([0.15, 0.01]),
    )
    assert r.route == ["review", "suspect"]
    assert r.reason[0] == "low_confidence_disagrees"
