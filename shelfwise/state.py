"""The state folder's file names, and the verification queue opened from the settings.

Everything a night leaves for the next one, the reports and the review commands lives in
``settings.state_dir`` (docs/architecture.md#state-folder); the names are here so that the writer and
every reader agree.
"""

from __future__ import annotations

from pathlib import Path

from shelfwise.settings import Settings
from verification.store import QueueStore

__all__ = [
    "CATALOG_STATE",
    "HISTORY",
    "PREDICTIONS_META",
    "PREDICTIONS_STATE",
    "open_queue",
    "read_queue",
]

#: The last run's predictions, every SKU: the rows an incremental night may carry.
PREDICTIONS_STATE = "predictions_state.parquet"
#: What those predictions were made with (model, taxonomy, routing settings, run id).
PREDICTIONS_META = "predictions_state.json"
#: Every SKU ever seen with its last content hash and the last run that saw it.
CATALOG_STATE = "catalog_state.parquet"
#: One row of headline figures per run (the report's trends).
HISTORY = "history.parquet"


def open_queue(settings: Settings) -> QueueStore:
    """The verification queue at ``settings.queue_url`` (the SQLite default's folder is created; the
    store's first write migrates the schema). The caller closes it."""
    url = settings.queue_url or ""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return QueueStore(url)


def read_queue(settings: Settings) -> QueueStore | None:
    """The queue for reading, or ``None`` when nothing was ever queued there (no database, or no schema):
    reads never create or migrate it."""
    url = settings.queue_url or ""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    store = QueueStore(url)
    if store.schema_revision() is None:
        store.close()
        return None
    return store
