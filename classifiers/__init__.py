"""Embedding, classification and LLM arbitration for shelfwise."""
from classifiers.embedding import Embedder, EmbeddingCache, make_embedder
__all__ = ["Embedder", "EmbeddingCache", "make_embedder"]

# category model, calibration, hierarchy and evaluation (classifiers/model.py and friends)
from classifiers.calibration import Thresholds, fit_thresholds, select_threshold  # noqa: E402
from classifiers.metrics import evaluate, evaluate_files, write_evaluation_html  # noqa: E402
from classifiers.model import CategoryModel, Prediction  # noqa: E402

__all__ += [
    "CategoryModel",
    "Prediction",
    "Thresholds",
    "select_threshold",
    "fit_thresholds",
    "evaluate",
    "evaluate_files",
    "write_evaluation_html",
]
