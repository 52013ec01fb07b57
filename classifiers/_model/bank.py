"""The base scorers of `CategoryModel` (lexical, semantic, kNN, brand, image, zero-shot) and their fitting.

Each scorer maps rows to a (n, K) matrix over the model's label columns. `fit_bank` trains them on a
subset; `score_bank` returns a dict name -> matrix. `out_of_fold_scores` runs both on the folds of
`stratified_folds` to get out-of-fold scores for the stacker; `CategoryModel.fit` then fits once on all
rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from classifiers.estimators import (
    CosineKNNClassifier,
    KeyPriorClassifier,
    LogPriceClassifier,
    TextLinearClassifier,
    usable_prices,
)

__all__ = [
    "SCORER_NAMES",
    "Bank",
    "BankData",
    "BankOptions",
    "fit_bank",
    "out_of_fold_scores",
    "score_bank",
    "stratified_folds",
]

SCORER_NAMES = ("lex", "sem", "knn_sem", "knn_lex", "maxsim", "brand", "price", "img", "zs")
_FLOOR = -30.0


@dataclass
class BankData:
    """Inputs of a set of rows: lexical texts, brand keys, text embeddings, image embeddings (+ ok mask)."""

    lexical: list[str]
    brand: list[str]
    emb: np.ndarray | None
    img: np.ndarray | None = None
    img_ok: np.ndarray | None = None
    price: np.ndarray | None = None  # (n,) float, NaN = missing

    def take(self, idx: np.ndarray) -> BankData:
        return BankData(
            lexical=[self.lexical[i] for i in idx],
            brand=[self.brand[i] for i in idx],
            emb=None if self.emb is None else self.emb[idx],
            img=None if self.img is None else self.img[idx],
            img_ok=None if self.img_ok is None else self.img_ok[idx],
            price=None if self.price is None else self.price[idx],
        )

    def __len__(self) -> int:
        return len(self.lexical)


@dataclass
class Bank:
    """Fitted scorers; ``n_classes`` label columns; scorers absent when disabled or not applicable."""

    n_classes: int
    lex: TextLinearClassifier | None = None
    sem: LogisticRegression | None = None
    knn_sem: CosineKNNClassifier | None = None
    knn_lex: CosineKNNClassifier | None = None
    brand: KeyPriorClassifier | None = None
    img: LogisticRegression | None = None
    price: LogPriceClassifier | None = None
    label_emb: np.ndarray | None = None  # (K, d) embedded label paths for the zero-shot score
    extra: dict[str, Any] = field(default_factory=dict)


def _full(scores: np.ndarray, classes: np.ndarray, k: int, fill: float) -> np.ndarray:
    out = np.full((scores.shape[0], k), fill, dtype=np.float64)
    out[:, np.asarray(classes, dtype=np.int64)] = scores
    return out


@dataclass(frozen=True)
class BankOptions:
    """Which base scorers `fit_bank` trains, and their settings."""

    use_tfidf: bool
    use_embeddings: bool
    k_neighbors: int
    random_state: int
    sem_C: float = 10.0
    lex_C: float = 0.5


def fit_bank(
    data: BankData,
    y: np.ndarray,
    n_classes: int,
    options: BankOptions,
    *,
    label_emb: np.ndarray | None,
) -> Bank:
    use_tfidf, use_embeddings = options.use_tfidf, options.use_embeddings
    k_neighbors, random_state = options.k_neighbors, options.random_state
    sem_C, lex_C = options.sem_C, options.lex_C
    bank = Bank(n_classes=n_classes, label_emb=label_emb)
    single = len(np.unique(y)) < 2
    if use_tfidf:
        bank.lex = TextLinearClassifier(C=lex_C)
        fit_matrix = bank.lex.fit_transform_rows(data.lexical, y)
        bank.knn_lex = CosineKNNClassifier(n_neighbors=k_neighbors, temperature=0.05).fit(fit_matrix, y)
    if use_embeddings and data.emb is not None:
        if not single:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                bank.sem = LogisticRegression(C=sem_C, max_iter=200, random_state=random_state).fit(
                    data.emb, y
                )
        bank.knn_sem = CosineKNNClassifier(n_neighbors=k_neighbors, temperature=0.05).fit(data.emb, y)
    if any(data.brand):
        bank.brand = KeyPriorClassifier(strength=2.0).fit(data.brand, y)
    if data.price is not None and usable_prices(data.price).sum() >= 2:
        bank.price = LogPriceClassifier(strength=5.0).fit(data.price[:, None], y)
    if data.img is not None and data.img_ok is not None and data.img_ok.sum() >= 2:
        ok = data.img_ok
        if len(np.unique(y[ok])) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                bank.img = LogisticRegression(C=5.0, max_iter=300, random_state=random_state).fit(
                    data.img[ok], y[ok]
                )
    return bank


def score_bank(bank: Bank, data: BankData) -> dict[str, np.ndarray]:
    """name -> (n, K) scores: margins for ``lex``, log-probabilities for the others, cosine for ``zs``."""
    k = bank.n_classes
    n = len(data)
    out: dict[str, np.ndarray] = {}
    if bank.lex is not None:
        rows, margins = bank.lex.transform_and_decide(data.lexical)
        out["lex"] = _full(margins, bank.lex.classes_, k, -2.0)
        if len(bank.lex.classes_) == 1:
            out["lex"][:, bank.lex.classes_] = 1.0
        assert bank.knn_lex is not None
        p = bank.knn_lex.predict_proba(rows)
        out["knn_lex"] = _full(np.log(p), bank.knn_lex.classes_, k, _FLOOR)
    if data.emb is not None and bank.knn_sem is not None:
        if bank.sem is not None:
            out["sem"] = _full(
                np.maximum(bank.sem.predict_log_proba(data.emb), _FLOOR), bank.sem.classes_, k, _FLOOR
            )
        out["knn_sem"] = _full(np.log(bank.knn_sem.predict_proba(data.emb)), bank.knn_sem.classes_, k, _FLOOR)
        out["maxsim"] = _full(bank.knn_sem.max_similarity(data.emb), bank.knn_sem.classes_, k, -1.0)
    if bank.brand is not None:
        has = np.array([bool(b) and b in bank.brand.counts_ for b in data.brand])
        logp = np.log(bank.brand.predict_proba(data.brand))
        logp[~has] = 0.0  # no information: flat
        out["brand"] = _full(logp, bank.brand.classes_, k, np.log(1e-4))
        out["brand"][~has] = 0.0
    price_model = getattr(bank, "price", None)  # models saved before the price scorer lack it
    if price_model is not None:
        prices = data.price if data.price is not None else np.full(n, np.nan)
        out["price"] = _full(price_model.log_likelihood(prices[:, None]), price_model.classes_, k, 0.0)
    if bank.img is not None and data.img is not None and data.img_ok is not None:
        logp = np.zeros((n, k))
        ok = data.img_ok
        if ok.any():
            logp[ok] = _full(
                np.maximum(bank.img.predict_log_proba(data.img[ok]), _FLOOR), bank.img.classes_, k, _FLOOR
            )
        out["img"] = logp
    if bank.label_emb is not None and data.emb is not None:
        out["zs"] = data.emb.astype(np.float64) @ bank.label_emb.T.astype(np.float64)
    return out


def out_of_fold_scores(
    data: BankData,
    y: np.ndarray,
    k: int,
    folds: list[tuple[np.ndarray, np.ndarray]],
    options: BankOptions,
    *,
    label_emb: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """name -> (n, K) scores of each base scorer, every row scored by scorers fit without its fold."""
    n = len(y)
    oof: dict[str, np.ndarray] = {}
    for tr, va in folds:
        bank = fit_bank(data.take(tr), y[tr], k, options, label_emb=label_emb)
        for name, m in score_bank(bank, data.take(va)).items():
            oof.setdefault(name, np.zeros((n, k)))[va] = m
    return oof


def stratified_folds(y: np.ndarray, *, cv: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``cv`` stratified folds of label ids ``y`` (fewer for tiny sets); labels with fewer rows than
    folds share one bucket (the largest label's when they are too few for a bucket of their own)."""
    n_splits = int(min(cv, max(2, len(y) // 4)))
    counts = np.bincount(y)
    strat = np.where(counts[y] >= n_splits, y, -1)
    if (strat == -1).sum() < n_splits and (strat == -1).any():
        strat = np.where(strat == -1, int(np.argmax(counts)), strat)
    kf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=int(random_state))
    return list(kf.split(np.zeros(len(y)), strat))
