"""The scikit-learn estimators inside `CategoryModel`.

    CosineKNNClassifier    kNN over L2-normalised vectors (embeddings or TF-IDF rows), softmax-weighted votes
    TextLinearClassifier   TF-IDF word 1-2 + char 2-5 grams -> LinearSVC (lexical signal), softmax probas
    KeyPriorClassifier     smoothed P(class | key) for a categorical key such as the brand
    LogPriceClassifier     a Gaussian over log(price) per class (log-normal naive Bayes on one number)

All follow scikit-learn conventions: ``__init__`` only stores keyword arguments, checks happen in
``fit``, learned state ends in ``_``, ``fit`` returns ``self``, ``predict_proba`` columns follow
``classes_``. ``tests/classifiers_model/test_estimator_checks.py`` runs scikit-learn's estimator checks
on each (the two text estimators take a 1-d sequence of strings, as scikit-learn's own text vectorizers
do, and declare it in their tags).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

__all__ = [
    "CosineKNNClassifier",
    "KeyPriorClassifier",
    "LogPriceClassifier",
    "TextLinearClassifier",
    "tfidf_union",
    "usable_prices",
]


class CosineKNNClassifier(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine similarity; each neighbour votes ``exp(sim / temperature)``.

    Rows are L2-normalised in ``fit`` and ``predict_proba`` (dense or sparse input). A low temperature
    lets a near-duplicate of a training item dominate the vote, which is what makes kNN confident on
    catalog variants (same product, other colour). ``predict_proba`` blends in ``smoothing`` of the class
    prior so no class gets exactly 0.
    """

    def __init__(self, *, n_neighbors: int = 10, temperature: float = 0.05, smoothing: float = 1e-3) -> None:
        self.n_neighbors = n_neighbors
        self.temperature = temperature
        self.smoothing = smoothing

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X: Any, y: Any) -> CosineKNNClassifier:
        if not isinstance(self.n_neighbors, int | np.integer) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive int, got {self.n_neighbors!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        self.X_ = normalize(X)
        self.y_ = y_idx
        prior = np.bincount(y_idx, minlength=len(self.classes_)).astype(np.float64)
        self.prior_ = prior / prior.sum()
        return self

    def similarities(self, X: Any) -> np.ndarray:
        """Cosine similarity of each row of X to each training row (n, n_train)."""
        check_is_fitted(self, "X_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        sim = normalize(X) @ self.X_.T
        return sim.toarray() if sparse.issparse(sim) else np.asarray(sim)

    def predict_proba(self, X: Any) -> np.ndarray:
        sim = self.similarities(X)
        n, m = sim.shape
        k = min(self.n_neighbors, m)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (n, 1))
        s = np.take_along_axis(sim, top, 1)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / self.temperature)
        votes = np.zeros((n, len(self.classes_)))
        np.add.at(votes, (np.repeat(np.arange(n), k), self.y_[top].ravel()), w.ravel())
        votes /= votes.sum(axis=1, keepdims=True)
        return np.asarray((1 - self.smoothing) * votes + self.smoothing * self.prior_)

    def max_similarity(self, X: Any) -> np.ndarray:
        """Highest similarity to a training row of each class (n, n_classes); -1 for classes unseen."""
        sim = self.similarities(X)
        out = np.full((sim.shape[0], len(self.classes_)), -1.0)
        for c in range(len(self.classes_)):
            cols = np.flatnonzero(self.y_ == c)
            if len(cols):
                out[:, c] = sim[:, cols].max(axis=1)
        return out

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "X_")
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


def tfidf_union(min_df_char: int) -> FeatureUnion:
    """TF-IDF word 1-2 grams and char_wb 2-5 grams (``min_df_char``), side by side (the lexical scorer's
    features; also the TF-IDF + LinearSVC baseline's in benchmarks/quality.py)."""
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True, min_df=1)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df_char
                ),
            ),
        ]
    )


class TextLinearClassifier(ClassifierMixin, BaseEstimator):
    """TF-IDF (word 1-2 grams + char 2-5 grams) -> one-vs-rest LinearSVC; the lexical signal.

    X is a sequence of strings. ``decision_function`` gives the SVM margins; ``predict_proba`` is
    ``softmax(proba_scale * margins)`` (calibrate it downstream, e.g. with `TemperatureScaler`).
    ``transform`` exposes the L2-normalised TF-IDF rows (used for lexical kNN).
    """

    def __init__(
        self,
        *,
        C: float = 0.5,
        min_df_char: int = 2,
        proba_scale: float = 5.0,
        class_weight: str | None = None,
    ) -> None:
        self.C = C
        self.min_df_char = min_df_char
        self.proba_scale = proba_scale
        self.class_weight = class_weight

    def __sklearn_tags__(self) -> Any:
        return _text_tags(super().__sklearn_tags__())

    def fit(self, X: Sequence[str], y: Any) -> TextLinearClassifier:
        self.fit_transform_rows(X, y)
        return self

    def fit_transform_rows(self, X: Sequence[str], y: Any) -> sparse.csr_matrix:
        """Fit, and return the L2-normalised TF-IDF rows of X (what ``transform(X)`` gives) without a
        second vectorisation; the estimator keeps no reference to them."""
        texts = _as_texts(X)
        self.classes_, _ = _labels(y, len(texts), "texts")
        y = np.asarray(y)
        try:
            self.vectorizer_ = tfidf_union(self.min_df_char)
            Xv = self.vectorizer_.fit_transform(texts)
        except ValueError:  # tiny corpora: every char n-gram below min_df
            self.vectorizer_ = tfidf_union(1)
            Xv = self.vectorizer_.fit_transform(texts)
        if len(self.classes_) == 1:
            self.svc_ = None
        else:
            # a fixed seed: liblinear shuffles, and the same rows must give the same model twice
            self.svc_ = LinearSVC(C=self.C, class_weight=self.class_weight, random_state=0).fit(Xv, y)
        return normalize(Xv)

    def transform(self, X: Sequence[str]) -> sparse.csr_matrix:
        check_is_fitted(self, "vectorizer_")
        return normalize(self.vectorizer_.transform(_as_texts(X)))

    def decision_function(self, X: Sequence[str]) -> np.ndarray:
        return self.transform_and_decide(X)[1]

    def transform_and_decide(self, X: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
        """(L2-normalised TF-IDF rows, SVM margins) with one vectorisation."""
        check_is_fitted(self, "vectorizer_")
        texts = _as_texts(X)
        Xv = self.vectorizer_.transform(texts)
        if self.svc_ is None:
            return normalize(Xv), np.zeros((len(texts), 1))
        d = self.svc_.decision_function(Xv)
        if len(self.classes_) == 2:  # binary: one margin for classes_[1]
            d = np.column_stack([-d, d]) / 2
        return normalize(Xv), np.asarray(d)

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        return np.asarray(softmax(self.proba_scale * self.decision_function(X), axis=1))

    def predict(self, X: Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "vectorizer_")
        return np.asarray(self.classes_[self.decision_function(X).argmax(axis=1)])


class KeyPriorClassifier(ClassifierMixin, BaseEstimator):
    """P(class | key) for one categorical key (e.g. the normalised brand), smoothed towards the class prior.

    ``predict_proba`` returns ``(counts + strength * prior) / (n_key + strength)``; an empty or unseen key
    gets the prior. X is a sequence of strings.
    """

    def __init__(self, *, strength: float = 2.0) -> None:
        self.strength = strength

    def __sklearn_tags__(self) -> Any:
        return _text_tags(super().__sklearn_tags__())

    def fit(self, X: Sequence[str], y: Any) -> KeyPriorClassifier:
        keys = _as_texts(X)
        _check_strength(self.strength)
        self.classes_, y_idx = _labels(y, len(keys), "keys")
        k = len(self.classes_)
        prior = np.bincount(y_idx, minlength=k).astype(np.float64) + 1.0
        self.prior_ = prior / prior.sum()
        counts: dict[str, np.ndarray] = {}
        for key, label in zip(keys, y_idx, strict=True):
            if key:
                counts.setdefault(key, np.zeros(k))[label] += 1
        self.counts_ = counts
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "counts_")
        keys = _as_texts(X)
        out = np.tile(self.prior_, (len(keys), 1))
        for i, key in enumerate(keys):
            c = self.counts_.get(key)
            if c is not None:
                out[i] = (c + self.strength * self.prior_) / (c.sum() + self.strength)
        return out

    def predict(self, X: Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "counts_")
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


class LogPriceClassifier(ClassifierMixin, BaseEstimator):
    """log P(price | class) for positive numbers such as the price: a Gaussian over log(value) per class.

    A class's mean and variance are shrunk towards the global ones with ``strength`` pseudo-rows, so a
    class seen with two prices does not get a needle-thin density. ``log_likelihood`` returns (n, K) log
    densities relative to the global density (0 = the price says nothing); a missing, zero or negative
    value adds nothing. ``predict_proba`` adds the class prior, ``softmax(log prior + log likelihood)``:
    a log-normal naive Bayes. X is 2-d, one column per quantity (``prices[:, None]`` for the price alone;
    NaN = missing; the columns' log-likelihoods add up). Learned ``mean_`` / ``var_`` are (K, n_columns).
    """

    def __init__(self, *, strength: float = 5.0) -> None:
        self.strength = strength

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN = no price
        # negative values carry no signal by design, so sklearn's blob accuracy check (0.83 on data
        # with negative coordinates) does not apply: price alone is a weak, complementary score
        tags.classifier_tags.poor_score = True
        return tags

    def _values(self, X: Any, *, reset: bool) -> np.ndarray:
        """X as (n, d) floats (a 1-d array is refused, as scikit-learn does: pass ``prices[:, None]``)."""
        out = validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite="allow-nan")
        return np.asarray(out, dtype=np.float64)

    def fit(self, X: Any, y: Any) -> LogPriceClassifier:
        _check_strength(self.strength)
        values = self._values(X, reset=True)
        self.classes_, y_idx = _labels(y, len(values), "prices")
        k, d = len(self.classes_), values.shape[1]
        counts = np.bincount(y_idx, minlength=k).astype(np.float64)
        self.class_log_prior_ = np.log(counts / counts.sum())
        a = float(self.strength)
        self.global_mean_, self.global_var_ = np.zeros(d), np.ones(d)
        self.mean_, self.var_ = np.zeros((k, d)), np.ones((k, d))
        for j in range(d):
            ok = usable_prices(values[:, j])
            lp = np.log(values[ok, j]) if ok.any() else np.zeros(1)
            self.global_mean_[j] = lp.mean()
            self.global_var_[j] = max(lp.var(), 1e-2)
            n = np.bincount(y_idx[ok], minlength=k).astype(np.float64)
            s1 = np.bincount(y_idx[ok], weights=lp if ok.any() else None, minlength=k)
            s2 = np.bincount(y_idx[ok], weights=lp**2 if ok.any() else None, minlength=k)
            mean = (s1 + a * self.global_mean_[j]) / (n + a)
            within = s2 - 2 * mean * s1 + n * mean**2  # sum of squares around the shrunk mean
            self.mean_[:, j] = mean
            self.var_[:, j] = np.maximum((within + a * self.global_var_[j]) / (n + a), 1e-2)
        return self

    def log_likelihood(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "mean_")
        values = self._values(X, reset=False)
        # models saved before several quantities were supported hold (K,) means and scalar globals
        mean, var = (
            np.reshape(self.mean_, (len(self.classes_), -1)),
            np.reshape(self.var_, (len(self.classes_), -1)),
        )
        g_mean, g_var = np.atleast_1d(self.global_mean_), np.atleast_1d(self.global_var_)
        if values.shape[1] != mean.shape[1]:
            raise ValueError(f"X has {values.shape[1]} columns, the model was fit on {mean.shape[1]}")
        out = np.zeros((len(values), len(self.classes_)))
        for j in range(values.shape[1]):
            ok = usable_prices(values[:, j])
            if ok.any():
                lp = np.log(values[ok, j])[:, None]
                dens = -0.5 * (np.log(var[:, j]) + (lp - mean[:, j]) ** 2 / var[:, j])
                base = -0.5 * (np.log(g_var[j]) + (lp - g_mean[j]) ** 2 / g_var[j])
                out[ok] += dens - base
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "class_log_prior_")
        return np.asarray(softmax(self.class_log_prior_ + self.log_likelihood(X), axis=1))

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "class_log_prior_")
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


def usable_prices(price: np.ndarray) -> np.ndarray:
    """Mask of prices the price scorer can use: present (not NaN), finite and positive."""
    return np.asarray(np.isfinite(price) & (price > 0))


def _check_strength(strength: float) -> None:
    if not strength > 0:
        raise ValueError(f"strength must be > 0, got {strength!r}")


def _labels(y: Any, n_x: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks shared by the estimators' ``fit``; returns ``(classes_, y as class indices)``."""
    y = column_or_1d(y, warn=True)
    if n_x != len(y):
        raise ValueError(f"X has {n_x} {what} but y has {len(y)} labels")
    check_classification_targets(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    return classes, y_idx


def _text_tags(tags: Any) -> Any:
    """Tags of an estimator whose X is a 1-d sequence of strings (like scikit-learn's text vectorizers)."""
    tags.input_tags.two_d_array = False
    tags.input_tags.one_d_array = True
    tags.input_tags.string = True
    return tags


def _as_texts(X: Any) -> list[str]:
    if isinstance(X, str):
        raise TypeError("X must be a sequence of strings, not one string")
    return ["" if x is None else str(x) for x in X]
