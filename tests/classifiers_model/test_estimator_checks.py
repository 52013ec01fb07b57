"""scikit-learn's estimator checks on every estimator of the category model (classifiers/estimators.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as checks
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifiers.estimators import (
    CosineKNNClassifier,
    KeyPriorClassifier,
    LogPriceClassifier,
    TextLinearClassifier,
)


@parametrize_with_checks(
    [
        CosineKNNClassifier(),
        CosineKNNClassifier(n_neighbors=3, temperature=0.2),
        LogPriceClassifier(),
        LogPriceClassifier(strength=0.5),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# The text estimators take a 1-d sequence of strings (their tags say so, as scikit-learn's text vectorizers'
# do), so scikit-learn skips its data checks for them: run its data-free API checks, then the same
# contracts on real-looking product titles.
TEXT_ESTIMATORS = [
    TextLinearClassifier(),
    TextLinearClassifier(C=2.0, min_df_char=1, class_weight="balanced"),
    KeyPriorClassifier(),
    KeyPriorClassifier(strength=0.5),
]
API_CHECKS = [
    checks.check_estimator_cloneable,
    checks.check_estimator_repr,
    checks.check_no_attributes_set_in_init,
    checks.check_valid_tag_types,
    checks.check_estimator_tags_renamed,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_mixin_order,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_parameters_default_constructible,
]
TITLES = [
    "ceramic coffee mug 350 ml",
    "coffee mug set of 2",
    "travel mug steel",
    "glass tea cup",
    "wifi router dual band",
    "wireless router 300 mbps",
    "mesh router kit",
    "router with 4 antennas",
    "cotton bath towel",
    "face towel set",
    "hand towel pack",
    "beach towel large",
]
LABELS = ["mug"] * 4 + ["router"] * 4 + ["towel"] * 4
BRANDS = [
    "cello",
    "cello",
    "milton",
    "borosil",
    "tp-link",
    "tp-link",
    "d-link",
    "",
    "sathiyas",
    "eurospa",
    "",
    "bombay",
]


def _text_x(estimator) -> list[str]:  # type: ignore[no-untyped-def]
    return BRANDS if isinstance(estimator, KeyPriorClassifier) else TITLES


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("estimator", TEXT_ESTIMATORS, ids=repr)
def test_text_estimators_pass_sklearn_api_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    tags = get_tags(estimator)
    assert tags.input_tags.string and tags.input_tags.one_d_array and not tags.input_tags.two_d_array
    assert tags.estimator_type == "classifier"
    check(type(estimator).__name__, estimator)


@pytest.mark.parametrize("estimator", TEXT_ESTIMATORS, ids=repr)
def test_text_estimators_follow_the_fit_predict_contract(estimator) -> None:  # type: ignore[no-untyped-def]
    X = _text_x(estimator)
    params = estimator.get_params()
    with pytest.raises(NotFittedError):
        clone(estimator).predict(X)
    fitted = clone(estimator)
    assert fitted.fit(X, LABELS) is fitted  # fit returns self
    assert fitted.get_params() == params  # fit does not touch the parameters
    assert not [k for k in vars(fitted) if not k.endswith("_") and k not in params]  # learned state ends in _
    assert list(fitted.classes_) == sorted(set(LABELS))
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[proba.argmax(axis=1)])
    # idempotent fit, and a pickled copy predicts the same
    again = clone(estimator).fit(X, LABELS).fit(X, LABELS)
    np.testing.assert_allclose(again.predict_proba(X), proba)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(fitted)).predict_proba(X), proba)
    # integer labels, a list or a tuple of texts: same behaviour
    ints = clone(estimator).fit(tuple(X), [sorted(set(LABELS)).index(v) for v in LABELS])
    np.testing.assert_allclose(ints.predict_proba(X), proba)
    # malformed input is refused with a clear error
    with pytest.raises(ValueError, match="labels"):
        clone(estimator).fit(X, LABELS[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        clone(estimator).fit(X, np.linspace(0, 1, len(X)))  # continuous y
    with pytest.raises(TypeError, match="sequence of strings"):
        clone(estimator).fit("one string", ["mug"])


def test_text_classifier_keeps_no_training_matrix() -> None:
    """The lexical kNN gets the training rows from fit_transform_rows; nothing stays on the estimator."""
    est = TextLinearClassifier()
    rows = est.fit_transform_rows(TITLES, LABELS)
    assert rows.shape[0] == len(TITLES)
    assert (abs(rows - est.transform(TITLES)) > 1e-12).nnz == 0
    assert set(vars(est)) == {
        "C",
        "min_df_char",
        "proba_scale",
        "class_weight",
        "classes_",
        "vectorizer_",
        "svc_",
    }


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
    est = LogPriceClassifier().fit(prices[:, None], y)
    ll = est.log_likelihood(np.array([[3.5], [45.0], [np.nan], [0.0], [-2.0]]))
    dice, board = list(est.classes_).index("dice"), list(est.classes_).index("board games")
    assert ll[0, dice] > ll[0, board] + 5 and ll[1, board] > ll[1, dice] + 5
    np.testing.assert_array_equal(ll[2:], 0.0)  # missing / impossible price: no signal
    # a class seen with only two prices is shrunk towards the global spread, not needle-thin
    few = LogPriceClassifier().fit(
        np.r_[prices, 10.0, 10.0][:, None], np.concatenate([y, ["kites", "kites"]])
    )
    assert few.var_[list(few.classes_).index("kites"), 0] > 0.2 * few.global_var_[0]
    with pytest.raises(ValueError, match="strength"):
        LogPriceClassifier(strength=0).fit(prices[:, None], y)
    # as a classifier: the prior plus the price; a missing price leaves the prior
    assert list(est.predict(np.array([[3.0], [50.0]]))) == ["dice", "board games"]
    np.testing.assert_allclose(est.predict_proba(np.array([[np.nan]]))[0], [0.5, 0.5])


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
