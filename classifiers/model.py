"""`CategoryModel`: catalog rows -> calibrated, tree-consistent category scores with hierarchical back-off.

Inside (see docs/model.md, and docs/FINDINGS.md for the measured effect of each part):

1. Base scorers (`classifiers/_model/bank.py`): TF-IDF word+char -> LinearSVC (lexical), MiniLM
   embeddings -> logistic regression and cosine kNN (semantic), kNN over TF-IDF rows, a smoothed
   brand prior, optionally product-photo embeddings -> logistic regression, and the cosine between the
   product and each label's taxonomy path (zero-shot signal).
2. A stacker trained on out-of-fold scores (``cv`` folds): a weighted sum of the scorers' per-label
   scores (one learned weight per scorer; robust on small data) and a gradient-boosted reranker over
   each row's top candidates (learns when to trust which scorer; wins on larger data). With
   ``stacker="auto"`` the one with the higher out-of-fold accuracy is kept.
3. Calibration on the stacker's own out-of-fold outputs (isotonic on the top score, or temperature
   scaling), then one auto-accept cut proven over all out-of-fold rows together (a fixed sequence of
   exact tests; provably bad categories excluded) and a back-off cut proven on its own share of delta
   (`classifiers/_model/proof.py`, `classifiers.selective`; docs/quality.md).
4. The answer is the top label with the calibrated probability that exactly it is right. Label
   probabilities summed into ancestors give the back-off answer: the deepest node on the label's path
   that clears its bar (``confident_ids``), or with ``hierarchy="backoff"`` the answer itself.
5. Zero-shot fallback: taxonomy nodes without training rows are scored by the cosine between the
   product and the node's path; a node that is clearly closer than every trained label takes mass.

The per-row answer: `classifiers/_model/predict.py`; the model folder: `classifiers/_model/store.py`.

    >>> model = CategoryModel().fit(frame, taxonomy, embedder=embedder, cache=cache)
    >>> pred = model.predict(new_rows, embedder=embedder, cache=cache, top_k=5)
    >>> model.save("models/default"); model = CategoryModel.load("models/default")
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import expit
from sklearn.base import BaseEstimator

from classifiers._model.accept import (
    Calibrator,
    Prediction,
    apply_calibrator,
    cross_fitted_calibration,
    fit_calibrator,
    fit_stackers,
)
from classifiers._model.bank import (
    BankData,
    BankOptions,
    fit_bank,
    out_of_fold_scores,
    score_bank,
    stratified_folds,
)
from classifiers._model.checks import HIERARCHY, check_enough_classes, check_params
from classifiers._model.correctness import (
    CORRECTNESS,
    CorrectnessModel,
    agreement_features,
    check_rankings,
    fit_correctness,
    shrunk_precision,
)
from classifiers._model.predict import assemble_prediction, concat_predictions, empty_prediction
from classifiers._model.proof import AcceptFit, OutOfFold, fit_model_thresholds
from classifiers._model.report import manifest_of, out_of_fold_report
from classifiers._model.rerank import LabelInfo, WeightedStacker, candidate_features, to_distribution
from classifiers._model.store import MODEL_FORMAT_VERSION, read_model_state, write_model_folder
from classifiers._model.text import TEXT_FIELDS, build_inputs, embed_chunks
from classifiers.hierarchy import NodeIndex
from shelfwise.errors import ConfigError, ModelError

__all__ = ["MODEL_FORMAT_VERSION", "CategoryModel", "Prediction", "agreement_features", "shrunk_precision"]

log = logging.getLogger("shelfwise.model")

_PREDICT_CHUNK = 2048  # rows scored at once by `predict` (bounds memory on large shards and training sets)


class CategoryModel(BaseEstimator):
    """Category classifier over taxonomy nodes (see the module docstring for what is inside).

    Options (keyword-only, stored as given; validated in ``fit``):
        text_fields: catalog columns used as text.
        use_tfidf / use_embeddings / use_images: enable the lexical, semantic and photo scorers.
        use_price: when the rows have a ``price`` column, score log(price) per category (a Gaussian per
            category, shrunk to the global one); rows without a price get no price signal. Off by
            default: it measured no gain on Amazon UK or Flipkart (see the ablation table in
            docs/FINDINGS.md).
        k_neighbors: neighbours of the kNN scorers.
        calibration: ``"isotonic"`` (default), ``"temperature"`` or ``"none"``.
        hierarchy: ``"leaf"`` (default: ``predicted_ids`` is the top label) or ``"backoff"`` (the deepest
            node on its path that clears its bar, where there is one).
        stacker: ``"auto"`` (default: the better of the two below, by out-of-fold accuracy), ``"weighted"``
            (one weight per scorer), ``"rerank"`` (gradient-boosted candidate reranker) or ``"mean"``.
        target_precision: precision the auto-accept thresholds prove (95% one-sided lower bound) out of fold.
        min_node_support: out-of-fold predictions a node (with its descendants not taken by a deeper
            node) needs for its own threshold; below, its rows are pooled with its parent's.
        zero_shot: let taxonomy nodes without training rows be predicted from their path text.
        zero_shot_margin: how much closer (cosine) an untrained node must be than every trained label
            before it takes probability mass; ``None`` = learned: the 99.5th percentile of that gap
            (+0.01) over the training rows (which all belong to trained labels), so the fallback rarely
            fires on products of known categories.
        cv: folds for the out-of-fold scores.
        rankings: the leaf rankings that compete for the auto-accept cut: ``("confidence",)`` (default)
            or ``("confidence", "correctness")`` (a cross-fitted logistic model of P(top label right),
            `classifiers._model.correctness`; delta split between them, the one proving most is used).
    """

    def __init__(
        self,
        *,
        text_fields: tuple[str, ...] = TEXT_FIELDS,
        use_tfidf: bool = True,
        use_embeddings: bool = True,
        use_images: bool = False,
        use_price: bool = False,
        k_neighbors: int = 10,
        calibration: str = "isotonic",
        hierarchy: str = "leaf",
        stacker: str = "auto",
        n_candidates: int = 10,
        target_precision: float = 0.95,
        min_node_support: int = 100,
        zero_shot: bool = True,
        zero_shot_margin: float | None = None,
        zero_shot_temperature: float = 0.01,
        cv: int = 5,
        random_state: int = 0,
        rankings: tuple[str, ...] = ("confidence",),
    ) -> None:
        self.text_fields = text_fields
        self.use_tfidf = use_tfidf
        self.use_embeddings = use_embeddings
        self.use_images = use_images
        self.use_price = use_price
        self.k_neighbors = k_neighbors
        self.calibration = calibration
        self.hierarchy = hierarchy
        self.stacker = stacker
        self.n_candidates = n_candidates
        self.target_precision = target_precision
        self.min_node_support = min_node_support
        self.zero_shot = zero_shot
        self.zero_shot_margin = zero_shot_margin
        self.zero_shot_temperature = zero_shot_temperature
        self.cv = cv
        self.random_state = random_state
        self.rankings = rankings

    # ================================================================== fit
    def _resolve_labels(self, frame: pl.DataFrame, taxonomy: Any) -> tuple[np.ndarray, list[str | None]]:
        paths = frame.get_column("category_path").to_list()
        ids: list[str | None] = []
        report: Counter[str] = Counter()
        bad: Counter[str] = Counter()
        for p in paths:
            if p is None or not str(p).strip():
                ids.append(None)
                report["no_label"] += 1
                continue
            node = taxonomy.find_path(str(p))
            if node is None:
                node = taxonomy.deepest_known(str(p))
                if node is not None:
                    report["cut_to_known_prefix"] += 1
            if node is None:
                ids.append(None)
                report["unresolvable"] += 1
                bad[str(p)] += 1
            else:
                ids.append(node.id)
                report["resolved"] += 1
        self.fit_report_["labels"] = dict(report)
        self.fit_report_["unresolvable_examples"] = [p for p, _ in bad.most_common(10)]
        keep = np.array([i is not None for i in ids], dtype=bool)
        return keep, ids

    def fit(
        self,
        frame: pl.DataFrame,
        taxonomy: Any,
        *,
        embedder: Any,
        cache: Any,
        image_embedder: Any = None,
    ) -> CategoryModel:
        """Train on catalog rows whose ``category_path`` resolves to a taxonomy node.

        Labels -> nodes -> base scorers -> stacker -> calibration -> proven cut; only fit sets ``*_``.
        """
        check_params(self)
        self._check_fit_inputs(frame, image_embedder)
        self.fit_report_: dict[str, Any] = {"rows": frame.height}
        keep, ids = self._resolve_labels(frame, taxonomy)
        frame = frame.filter(pl.Series(keep))
        labels = [i for i in ids if i is not None]
        classes = sorted(set(labels))
        check_enough_classes(classes, labels, taxonomy, self.fit_report_["unresolvable_examples"])
        self.classes_ = np.array(classes, dtype=object)
        pos = {c: i for i, c in enumerate(classes)}
        y = np.array([pos[i] for i in labels], dtype=np.int64)
        n, k = len(y), len(classes)
        self.fit_report_.update(trained_rows=n, n_classes=k)
        self.label_counts_ = {c: int(v) for c, v in zip(classes, np.bincount(y, minlength=k), strict=True)}

        self.embedder_id_ = (
            str(getattr(embedder, "model_id", "")) if self.use_embeddings or self.zero_shot else ""
        )
        self.image_embedder_id_ = str(getattr(image_embedder, "model_id", "")) if self.use_images else ""
        self.taxonomy_version_ = str(getattr(taxonomy, "version", ""))
        self.taxonomy_source_ = str(getattr(taxonomy, "source", ""))

        # nodes: labels + ancestors + zero-shot candidates (untrained nodes outside the labels' ancestry)
        zs_nodes = self._zero_shot_nodes(classes, taxonomy)
        self.index_ = NodeIndex.from_taxonomy(taxonomy, [*classes, *zs_nodes])
        self.label_pos_ = self.index_.position(classes)
        self.zs_pos_ = self.index_.position(zs_nodes) if zs_nodes else np.zeros(0, dtype=np.int64)
        need_emb = self.use_embeddings or self.zero_shot
        label_emb, self.zs_emb_ = self._embed_nodes(embedder, cache, need_emb=need_emb, has_zs=bool(zs_nodes))

        data, image_failures = self._bank_data(frame, embedder, cache, image_embedder, need_emb=need_emb)
        self.zero_shot_margin_, zs_report = self._fit_zero_shot_margin(data, label_emb)
        if zs_report is not None:
            self.fit_report_["zero_shot"] = zs_report
        self.fit_report_["image_failures"] = image_failures
        bank_opts = self._bank_options()
        # ---- out-of-fold base scores, then the scorers on all rows
        folds = stratified_folds(y, cv=int(self.cv), random_state=int(self.random_state))
        oof = out_of_fold_scores(data, y, k, folds, bank_opts, label_emb=label_emb)
        self.bank_ = fit_bank(data, y, k, bank_opts, label_emb=label_emb)
        self.scorer_names_ = sorted(oof)
        self.label_info_ = LabelInfo.of_labels(self.index_, self.label_pos_, y, k)
        # ---- stackers on out-of-fold scores (their own out-of-fold outputs feed selection + calibration)
        stack = fit_stackers(
            oof,
            y,
            scorer_names=self.scorer_names_,
            label_info=self.label_info_,
            stacker=self.stacker,
            n_candidates=int(self.n_candidates),
            random_state=int(self.random_state),
        )
        self.stacker_, self.weighted_, self.reranker_ = stack.chosen, stack.weighted, stack.reranker
        self.fit_report_["stacker"] = stack.report
        p_raw = stack.oof
        # ---- calibration, then one proven cut over all out-of-fold rows
        self.calibrator_: Calibrator
        self.calibrator_, accept, heldout, self.correctness_ = self._fit_acceptance(p_raw, y, folds, oof)
        self.thresholds_ = accept.thresholds
        self.fit_report_["heldout"] = heldout
        self.fit_report_["thresholds"] = {
            "groups": self._readable_groups(),
            "backoff": self.fit_report_["heldout"]["backoff"],
        }
        self.version_ = self._compute_version(frame, labels)
        self.created_at_ = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return self

    def _bank_options(self) -> BankOptions:
        return BankOptions(
            use_tfidf=self.use_tfidf,
            use_embeddings=self.use_embeddings,
            k_neighbors=int(self.k_neighbors),
            random_state=int(self.random_state),
        )

    def _fit_acceptance(
        self,
        p_raw: np.ndarray,
        y: np.ndarray,
        folds: list[tuple[np.ndarray, np.ndarray]],
        scores: dict[str, np.ndarray],
    ) -> tuple[Calibrator, AcceptFit, dict[str, Any], CorrectnessModel | None]:
        """(calibrator, proven cut, out-of-fold report, the correctness model when its ranking won) from
        the stacker's out-of-fold outputs (and the base scorers' out-of-fold ``scores``)."""
        # calibration on the stacker's out-of-fold outputs; cross-fitted copies for honest figures
        calibrator = fit_calibrator(self.calibration, p_raw, y)
        p_cal_cf = cross_fitted_calibration(self.calibration, p_raw, y, folds)
        rankings, correctness = {}, None
        if CORRECTNESS in check_rankings(self.rankings):
            rankings[CORRECTNESS], correctness = fit_correctness(
                p_raw,
                y,
                scores,
                scorer_names=self.scorer_names_,
                info=self.label_info_,
                random_state=int(self.random_state),
            )
        # one proven cut over all out-of-fold rows, never on scores the calibrator was fit on
        accept = fit_model_thresholds(
            OutOfFold(p_raw, p_cal_cf, y),
            index=self.index_,
            label_pos=self.label_pos_,
            calibrator=calibrator,
            target_precision=float(self.target_precision),
            rankings=rankings,
        )
        heldout = out_of_fold_report(
            p_raw, p_cal_cf, y, accept, temperature=getattr(calibrator, "temperature_", None)
        )
        return calibrator, accept, heldout, correctness if accept.ranking == CORRECTNESS else None

    def _check_fit_inputs(self, frame: pl.DataFrame, image_embedder: Any) -> None:
        if "category_path" not in frame.columns:
            raise ConfigError(
                "training frame has no 'category_path' column; map your label column to category_path"
            )
        if self.use_images and image_embedder is None:
            raise ConfigError(
                "CategoryModel(use_images=True) needs image_embedder= in fit (or use_images=False)"
            )

    def _zero_shot_nodes(self, classes: list[str], taxonomy: Any) -> list[str]:
        """Untrained taxonomy nodes outside the labels' ancestry (none unless ``zero_shot``)."""
        if not self.zero_shot:
            return []
        covered = {a.id for c in classes for a in taxonomy.ancestors(c, include_self=True)}
        return [node.id for node in taxonomy if node.id not in covered]

    def _embed_nodes(
        self, embedder: Any, cache: Any, *, need_emb: bool, has_zs: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(embedded label paths, embedded zero-shot node paths), each None when not needed."""
        if not need_emb:
            return None, None
        label_emb = np.asarray(
            cache.embed(embedder, [self.index_.paths[p] for p in self.label_pos_]), np.float32
        )
        zs_emb = (
            np.asarray(cache.embed(embedder, [self.index_.paths[p] for p in self.zs_pos_]), np.float32)
            if has_zs
            else None
        )
        return label_emb, zs_emb

    def _fit_zero_shot_margin(
        self, data: BankData, label_emb: np.ndarray | None
    ) -> tuple[float, dict[str, Any] | None]:
        """(the zero-shot margin, its fit report or None when zero-shot scoring is off)."""
        margin = float(self.zero_shot_margin) if self.zero_shot_margin is not None else 0.0
        if self.zs_emb_ is None or data.emb is None or label_emb is None:
            return margin, None
        gap = self._zero_shot_gap(data.emb, label_emb)[1]
        if self.zero_shot_margin is None:
            margin = float(np.quantile(gap, 0.995)) + 0.01
        return margin, {
            "untrained_nodes": len(self.zs_pos_),
            "margin": round(margin, 4),
            "training_rows_firing": float(np.mean(gap > margin)),
        }

    def _readable_groups(self) -> dict[str, dict[str, Any]]:
        """`Thresholds.groups` keyed by category path instead of id (``"*"``: the proven cut)."""
        path_of = dict(zip(self.index_.ids, self.index_.paths, strict=True))
        out = {}
        for g, v in self.thresholds_.groups.items():
            node = g.removesuffix(" (excluded)")
            out[path_of.get(node, node) + g[len(node) :]] = v
        return out

    def _zero_shot_gap(self, emb: np.ndarray, label_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best untrained node per row, its cosine minus the best trained label's cosine)."""
        assert self.zs_emb_ is not None
        zu = emb.astype(np.float64) @ self.zs_emb_.T.astype(np.float64)
        best_u = zu.argmax(axis=1)
        zt = emb.astype(np.float64) @ label_emb.T.astype(np.float64)
        return best_u, zu[np.arange(len(emb)), best_u] - zt.max(axis=1)

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        return apply_calibrator(self.calibrator_, p)

    def _bank_data(
        self, frame: pl.DataFrame, embedder: Any, cache: Any, image_embedder: Any, *, need_emb: bool
    ) -> tuple[BankData, dict[str, int]]:
        """The base scorers' inputs of ``frame``, and the photos that failed to load (reason -> count)."""
        inputs = build_inputs(frame, tuple(self.text_fields))
        emb = embed_chunks(inputs.chunks, embedder, cache) if need_emb else None
        img = ok = None
        failures: dict[str, int] = {}
        if self.use_images:
            paths = (
                frame.get_column("image_path").to_list()
                if "image_path" in frame.columns
                else [None] * frame.height
            )
            if image_embedder is None:
                log.warning("model uses images but no image_embedder was given; photos are ignored")
                img = np.zeros((frame.height, 1))
                ok = np.zeros(frame.height, dtype=bool)
            else:
                batch = cache.embed_images(image_embedder, paths)
                img, ok = batch.vectors, batch.ok
                failures = dict(batch.failures)
        price = None
        if self.use_price and "price" in frame.columns:
            price = frame.get_column("price").cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
        data = BankData(lexical=inputs.lexical, brand=inputs.brand, emb=emb, img=img, img_ok=ok, price=price)
        return data, failures

    def _compute_version(self, frame: pl.DataFrame, labels: list[str]) -> str:
        h = hashlib.sha256()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        if params["rankings"] == ["confidence"]:  # the default: versions as before the option existed
            del params["rankings"]
        h.update(json.dumps(params, sort_keys=True, default=str).encode())
        h.update(self.embedder_id_.encode())
        h.update(self.taxonomy_version_.encode())
        cols = [c for c in ("sku_id", *self.text_fields, "image_path") if c in frame.columns]
        for row, label in zip(frame.select(cols).iter_rows(), labels, strict=True):
            h.update(("\x1f".join("" if v is None else str(v) for v in row) + "\x1e" + label + "\n").encode())
        return "sha256:" + h.hexdigest()[:16]

    # ================================================================== predict
    @property
    def version(self) -> str:
        """Content hash of the training data and options (``"sha256:<16 hex>"``)."""
        self._check_fitted()
        return str(self.version_)

    @property
    def taxonomy_version(self) -> str:
        self._check_fitted()
        return str(self.taxonomy_version_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "bank_"):
            raise ModelError("CategoryModel is not trained; call fit(...) or CategoryModel.load(model_dir)")

    def _check_embedder(self, embedder: Any) -> None:
        if not self.embedder_id_:
            return
        got = str(getattr(embedder, "model_id", None))
        if got != self.embedder_id_:
            raise ModelError(
                f"this model was trained with embedder {self.embedder_id_!r} but got {got!r}; "
                "use the same embedder (setting 'embedder') or retrain: shelfwise train ..."
            )

    def predict_label_proba(
        self, frame: pl.DataFrame, *, embedder: Any, cache: Any, image_embedder: Any = None
    ) -> np.ndarray:
        """Calibrated probabilities over the trained labels (n, len(classes_)); columns follow
        ``classes_``."""
        return self._label_proba(frame, embedder, cache, image_embedder)[0]

    def _label_proba(
        self, frame: pl.DataFrame, embedder: Any, cache: Any, image_embedder: Any
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(calibrated label probabilities, text embeddings, the correctness score when it is the ranking)."""
        self._check_fitted()
        self._check_embedder(embedder)
        need_emb = self.bank_.label_emb is not None or self.bank_.knn_sem is not None
        data, _ = self._bank_data(frame, embedder, cache, image_embedder, need_emb=need_emb)
        scores = score_bank(self.bank_, data)
        weighted: WeightedStacker | None = getattr(self, "weighted_", None)
        if weighted is not None:
            raw = weighted.predict_proba(
                WeightedStacker.features(scores, self.scorer_names_, self.label_info_)
            )
        else:
            cand, feats, fused = candidate_features(
                scores, self.scorer_names_, self.label_info_, n_candidates=int(self.n_candidates)
            )
            s = np.take_along_axis(fused, cand, 1)
            if self.reranker_ is not None:
                s = self.reranker_.predict_proba(feats.reshape(-1, feats.shape[-1]))[:, 1].reshape(cand.shape)
            raw = to_distribution(s, cand, fused)
        correctness: CorrectnessModel | None = getattr(self, "correctness_", None)  # None: older models
        corr = None if correctness is None else correctness.score(raw, scores, self.label_info_)
        return self._calibrate(raw), data.emb, corr

    def predict_correctness(
        self, frame: pl.DataFrame, *, embedder: Any, cache: Any, image_embedder: Any = None
    ) -> np.ndarray | None:
        """The correctness score of each row's top trained label, the score the leaf cut is on when the
        model's ranking is ``"correctness"``; None when it is the confidence."""
        return self._label_proba(frame, embedder, cache, image_embedder)[2]

    def _scored(
        self, frame: pl.DataFrame, embedder: Any, cache: Any, image_embedder: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(label probabilities incl. the zero-shot column, their node positions, tree-summed node scores,
        the correctness score of the top trained label or None)."""
        n = frame.height
        p, emb, corr = self._label_proba(frame, embedder, cache, image_embedder)
        # label columns (+ one zero-shot column per row) at node positions
        col_pos = np.tile(self.label_pos_, (n, 1))
        probs = p
        label_emb = self.bank_.label_emb
        if (
            self.zero_shot
            and self.zs_emb_ is not None
            and len(self.zs_pos_)
            and emb is not None
            and label_emb is not None
        ):
            best_u, gap = self._zero_shot_gap(emb, label_emb)
            g = expit((gap - self.zero_shot_margin_) / float(self.zero_shot_temperature))
            g = np.where(g < 0.05, 0.0, g)
            probs = np.column_stack([p * (1 - g)[:, None], g])
            col_pos = np.column_stack([col_pos, self.zs_pos_[best_u]])
        full = np.zeros((n, len(self.index_)))
        rows = np.arange(n)
        np.add.at(full, (np.repeat(rows, col_pos.shape[1]), col_pos.ravel()), probs.ravel())
        node_scores = self.index_.aggregate_full(full)
        return probs, col_pos, node_scores, corr

    def node_proba(
        self, frame: pl.DataFrame, *, embedder: Any, cache: Any, image_embedder: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(node ids, scores (n, n_nodes)): every label's probability summed into its ancestors, so a
        parent's score is >= each child's. Nodes: the trained labels, their ancestors, zero-shot nodes."""
        node_scores = self._scored(frame, embedder, cache, image_embedder)[2]
        return np.array(self.index_.ids, dtype=object), node_scores

    def predict(
        self,
        frame: pl.DataFrame,
        *,
        embedder: Any,
        cache: Any,
        image_embedder: Any = None,
        top_k: int = 5,
        hierarchy: str | None = None,
    ) -> Prediction:
        """Top-k labels with calibrated scores, and the chosen node after back-off (see `Prediction`).

        ``hierarchy`` overrides the model's option for this call (``"backoff"`` or ``"leaf"``).
        """
        mode = hierarchy or self.hierarchy
        if mode not in HIERARCHY:
            raise ConfigError(f"hierarchy={mode!r} is not valid; use 'backoff' or 'leaf'")
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        n = frame.height
        if n == 0:
            return empty_prediction(top_k)
        if n > _PREDICT_CHUNK:
            # bounded memory: the kNN scorers build (rows x training rows) similarity matrices and the
            # hierarchy (rows x taxonomy nodes) scores, so a 20k-row shard is scored 2k rows at a time
            parts = [
                self.predict(
                    frame.slice(start, _PREDICT_CHUNK),
                    embedder=embedder,
                    cache=cache,
                    image_embedder=image_embedder,
                    top_k=top_k,
                    hierarchy=mode,
                )
                for start in range(0, n, _PREDICT_CHUNK)
            ]
            return concat_predictions(parts)
        probs, col_pos, node_scores, corr = self._scored(frame, embedder, cache, image_embedder)
        return assemble_prediction(
            self, probs, col_pos, node_scores, top_k=top_k, mode=mode, correctness=corr
        )

    # ================================================================== persistence
    def save(self, model_dir: str | Path) -> Path:
        """Write ``model.joblib`` and ``manifest.json`` into ``model_dir`` (created if needed)."""
        self._check_fitted()
        return write_model_folder(
            model_dir,
            params=self.get_params(),
            fitted={k: v for k, v in self.__dict__.items() if k.endswith("_") and not k.startswith("__")},
            index=self.index_,
            manifest=self.manifest(),
        )

    def manifest(self) -> dict[str, Any]:
        """What ``manifest.json`` holds: versions, embedder, creation time, label counts, out-of-fold
        figures and every threshold with its evidence (`classifiers._model.report.manifest_of`)."""
        self._check_fitted()
        return manifest_of(self, MODEL_FORMAT_VERSION)

    @classmethod
    def load(cls, model_dir: str | Path, *, embedder: Any = None) -> CategoryModel:
        """Load a model written by `save`; with ``embedder`` given, check it is the one used in training."""
        params, fitted = read_model_state(model_dir)
        model = cls(**params)
        model.__dict__.update(fitted)
        if embedder is not None:
            model._check_embedder(embedder)
        return model
