"""Embedding, classification and LLM arbitration for shelfwise.

Embeddings: `Embedder`, `EmbeddingCache` (SQLite or PostgreSQL: `open_embedding_cache`), `make_embedder`
(classifiers/embedding.py). Category model, calibration, thresholds and evaluation: `CategoryModel`,
`Prediction`, `Thresholds`, `select_threshold`, `fit_thresholds`, `evaluate`, `evaluate_files`,
`write_evaluation_html` (classifiers/model.py, classifiers/selective.py and friends).
LLM arbitration: `LLMArbiter`, `LLMSettings`, `gate` (classifiers/llm.py).
"""

from classifiers.calibration import Thresholds, select_threshold
from classifiers.embedding import Embedder, EmbeddingCache, make_embedder, open_embedding_cache
from classifiers.llm import LLMArbiter, LLMSettings, LLMStats, LLMStatus, ModelPrice, OutputMode, gate
from classifiers.metrics import evaluate, evaluate_files, write_evaluation_html
from classifiers.model import CategoryModel, Prediction
from classifiers.selective import fit_thresholds

__all__ = [
    "CategoryModel",
    "Embedder",
    "EmbeddingCache",
    "LLMArbiter",
    "LLMSettings",
    "LLMStats",
    "LLMStatus",
    "ModelPrice",
    "OutputMode",
    "Prediction",
    "Thresholds",
    "evaluate",
    "evaluate_files",
    "fit_thresholds",
    "gate",
    "make_embedder",
    "open_embedding_cache",
    "select_threshold",
    "write_evaluation_html",
]
