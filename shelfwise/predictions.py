"""The predictions contract: the columns of ``predictions.parquet`` (extend, never rename or drop), the
type of its ``candidates`` column, and the product columns a prediction row carries to the review queue.

Every side that writes or reads predictions (the night, the carry state, the reports) takes them from
here; docs/predictions.md describes each column.
"""

from __future__ import annotations

import polars as pl

__all__ = ["CANDIDATE_TYPE", "PREDICTION_COLUMNS", "PRODUCT_COLUMNS", "empty_predictions"]

#: The predictions contract (extend, never rename or drop).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "sku_id",
    "category_id",
    "category_path",
    "confidence",
    "route",
    "candidates",
    "current_category_path",
    "taxonomy_version",
    "model_version",
    "run_id",
    # extensions
    "predicted_depth",
    "margin",
    "source",
    "reason",
    "queue",
    "llm_status",
    "content_hash",
    "title",
    "scored_run_id",  # the run that scored this row (earlier than run_id when the row was carried)
    "confident_category_id",  # the back-off answer: deepest node on the path clearing its bar (or null)
    "confident_category_path",
    "confident_confidence",
)

CANDIDATE_TYPE = pl.List(
    pl.Struct({"category_id": pl.String, "category_path": pl.String, "score": pl.Float64})
)

#: Product columns carried from the catalog into the queue (not into predictions.parquet).
PRODUCT_COLUMNS = ("title", "description", "brand", "attributes", "image_path", "review_text", "price")


def empty_predictions() -> pl.DataFrame:
    """No rows, every contract column (as strings: the schema of a night that classified nothing)."""
    return pl.DataFrame(schema={c: pl.String for c in PREDICTION_COLUMNS})
