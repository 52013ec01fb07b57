"""scikit-learn's own estimator checks on the numeric estimators of the category model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifiers.estimators import (
    CosineKNNClassifier,
    KeyPriorClassifier,
    LogPriceClassifier,
    TextLinearClassifier,
)


@parametrize_with_checks([CosineKNNClassifier(), CosineKNNClassifier(n_neighbors=3, temperature=0.2)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_knn_votes_follow_the_nearest_rows():
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = np.array(["mug", "mug", "router", "router"])
    knn = CosineKNNClassifier(n_neighbors=2).fit(X, y)
    proba = knn.predict_proba(np.array([[1.0, 0.05], [0.05, 1.0]]))
    assert list(knn.classes_) == ["mug", "router"]
    assert proba[0, 0] > 0.99 and proba[1, 1] > 0.99
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(knn.predict(np.array([[0.2, 0.8]]))) == ["router"]


def test_bad_options_fail_in_fit_not_init():
    est = CosineKNNClassifier(n_neighbors=0)  # storing is fine
    with pytest.raises(ValueError, match="n_neighbors"):
        est.fit(np.eye(2), [0, 1])


def test_text_and_key_classifiers_follow_classes_order():
    texts = [
        "ceramic coffee mug 350 ml",
        "wifi router dual band",
        "coffee mug set of 2",
        "wireless router 300 mbps",
    ]
    y = ["mug", "router", "mug", "router"]
    lex = TextLinearClassifier(min_df_char=1).fit(texts, y)
    assert list(lex.predict(["blue coffee mug", "router with 4 antennas"])) == ["mug", "router"]
    p = lex.predict_proba(["coffee mug"])
    assert p.shape == (1, 2) and p[0, 0] > 0.5
    brand = KeyPriorClassifier().fit(
        ["tp-link", "", "tp-link", "rockmantra"], ["router", "mug", "router", "mug"]
    )
    pb = brand.predict_proba(["tp-link", "unknown brand"])
    assert pb[0, list(brand.classes_).index("router")] > 0.6
    np.testing.assert_allclose(pb[1], brand.prior_)


def test_price_likelihood_separates_cheap_and_dear_categories_and_ignores_missing_prices():
    rng = np.random.default_rng(0)
    # real-world shape: dice sets cost a few pounds, board games tens of pounds
    prices = np.r_[rng.lognormal(np.log(4), 0.3, 40), rng.lognormal(np.log(40), 0.3, 40)]
    y = np.array(["dice"] * 40 + ["board games"] * 40)
    est = LogPriceClassifier().fit(prices, y)
    ll = est.log_likelihood(np.array([3.5, 45.0, np.nan, 0.0, -2.0]))
    dice, board = list(est.classes_).index("dice"), list(est.classes_).index("board games")
    assert ll[0, dice] > ll[0, board] + 5 and ll[1, board] > ll[1, dice] + 5
    np.testing.assert_array_equal(ll[2:], 0.0)  # missing / impossible price: no signal
    # a class seen with only two prices is shrunk towards the global spread, not needle-thin
    few = LogPriceClassifier().fit(np.r_[prices, 10.0, 10.0], np.concatenate([y, ["kites", "kites"]]))
    assert few.var_[list(few.classes_).index("kites")] > 0.2 * few.global_var_
    with pytest.raises(ValueError, match="strength"):
        LogPriceClassifier(strength=0).fit(prices, y)


def test_public_names_are_exported_once():
    import classifiers

    assert len(classifiers.__all__) == len(set(classifiers.__all__))
    for name in (
        "CategoryModel",
        "Prediction",
        "Thresholds",
        "select_threshold",
        "evaluate",
        "evaluate_files",
    ):
        assert name in classifiers.__all__ and getattr(classifiers, name) is not None
