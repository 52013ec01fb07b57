"""Typed configuration for shelfwise.

One `Settings` object, read (lowest to highest precedence) from defaults, a `shelfwise.toml` file in the
working directory (or the file named by ``SHELFWISE_CONFIG``), environment variables prefixed
``SHELFWISE_`` (nested with ``__``, e.g. ``SHELFWISE_LLM__MODEL``), and finally CLI flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from classifiers.embedding import embedder_names
from classifiers.llm import LLMSettings

__all__ = ["QueueCapacity", "Settings", "load_settings"]


class QueueCapacity(BaseSettings):
    """Nightly capacity per verification queue (items kept per run, highest priority first)."""

    low_confidence: int = Field(5000, ge=0)
    suspect: int = Field(5000, ge=0)
    llm_failed: int = Field(2000, ge=0)
    audit: int = Field(500, ge=0)


class Settings(BaseSettings):
    """All shelfwise settings. Every field can be set in shelfwise.toml or as SHELFWISE_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="SHELFWISE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    state_dir: Path = Field(
        Path(".shelfwise"), description="Folder for runtime state: models, caches, runs, queue DB."
    )
    queue_url: str | None = Field(
        None, description="SQLAlchemy URL of the verification queue DB (default: SQLite in state_dir)."
    )
    embedder: str = Field(
        "minilm", description="Text embedder: minilm | e5-multilingual | minilm+e5-multilingual."
    )
    shard_size: int = Field(20_000, ge=100, description="SKUs per shard (one Prefect task per shard).")
    workers: int = Field(
        2, ge=1, le=64, description="Shards classified in parallel on the thread runner (its max_workers)."
    )
    dask_address: str | None = Field(
        None,
        description="Run the shard tasks on this dask.distributed scheduler (tcp://HOST:PORT); needs the "
        "`dask` extra, and workers that can import shelfwise and reach state_dir/work_url.",
    )
    dask_workers: int | None = Field(
        None, ge=1, le=256, description="Start a local Dask cluster of this many single-thread processes."
    )
    incremental: bool = Field(
        True,
        description="Carry the last prediction of SKUs whose content, current category, model, taxonomy and "
        "routing settings are unchanged (only new and changed SKUs are scored).",
    )
    embedding_cache_url: str | None = Field(
        None,
        description="PostgreSQL URL of the embedding cache shared by workers on several hosts, e.g. "
        "postgresql+psycopg://user@host:5432/db (default: SQLite file <state_dir>/cache/embeddings.sqlite).",
    )
    work_url: str | None = Field(
        None,
        description="Where a run stages its shards and prediction parts: a folder every worker sees, or an "
        "fsspec URL such as s3://bucket/prefix (default <state_dir>/work).",
    )
    state_buckets: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Buckets the per-SKU state (carry state, catalog state, duplicate check) is split into "
        "by a hash of sku_id; each is staged and finished by its own task (default: about one per million "
        "SKUs, see docs/scale.md). Changing it re-buckets last night's state.",
    )
    top_k: int = Field(5, ge=1, le=50, description="Candidates kept per SKU.")
    target_precision: float = Field(
        0.95, gt=0.5, lt=1.0, description="Precision the auto-accept thresholds are tuned for."
    )
    rankings: list[Literal["confidence", "correctness"]] = Field(
        ["confidence"],
        description="Leaf rankings that compete for the auto-accept cut at training: ['confidence'] "
        "(default) or ['confidence', 'correctness'] (a cross-fitted model of P(top label right); delta is "
        "split between them and the one proving the most share is used). See docs/quality.md.",
    )
    auto_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "Fixed confidence threshold for auto-accept; default: the model's tuned per-node thresholds."
        ),
    )
    auto_accept_level: Literal["leaf", "backoff"] = Field(
        "leaf",
        description="What category_path holds and auto-accept means: 'leaf' = the most specific category the "
        "model predicts; 'backoff' = the deepest category on its path that clears the precision target "
        "(for shops that file products on inner nodes). See docs/predictions.md.",
    )
    suspect_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "Confidence a prediction needs to flag the current category as suspect (default: 0.5, "
            "whatever the auto-accept bar; see verification/routing.py)."
        ),
    )
    max_current_support: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description=(
            "A current category still scoring above this (best candidate on its branch) is not "
            "called suspect; a disagreement goes to review instead."
        ),
    )
    audit_rate: float = Field(
        0.01, ge=0.0, le=1.0, description="Share of auto-accepted items sampled into the audit queue."
    )
    queue_capacity: QueueCapacity = Field(default_factory=QueueCapacity)
    use_images: bool = Field(
        False, description="Use product photos (EfficientNet-Lite0 features) when training."
    )
    use_price: bool = Field(
        False,
        description="Use the catalog's price (log-price per category) when training; off: no measured gain.",
    )
    default_model_dir: Path | None = Field(
        None, description="Model used by `run` (default: <state_dir>/models/default)."
    )
    llm: LLMSettings = Field(default_factory=LLMSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = Path(os.environ.get("SHELFWISE_CONFIG", "shelfwise.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config))

    @field_validator("embedder")
    @classmethod
    def _known_embedder(cls, value: str) -> str:
        allowed = tuple(embedder_names())
        if value not in allowed:
            raise ValueError(f"embedder {value!r} is not known; use one of {', '.join(allowed)}")
        return value

    @field_validator("rankings")
    @classmethod
    def _rankings(cls, value: list[str]) -> list[str]:
        if "confidence" not in value or len(set(value)) != len(value):
            raise ValueError(
                f"rankings {value!r}: 'confidence' always competes and each ranking is named once; "
                "use ['confidence'] or ['confidence', 'correctness']"
            )
        return [r for r in ("confidence", "correctness") if r in value]

    @field_validator("embedding_cache_url")
    @classmethod
    def _embedding_cache_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().startswith(("postgresql", "postgres:")):
            raise ValueError(
                f"embedding_cache_url {value!r} is not a PostgreSQL URL; use postgresql+psycopg://user@host:5432/db"
                ", or leave it unset for the SQLite file <state_dir>/cache/embeddings.sqlite"
            )
        return value.strip()

    @model_validator(mode="after")
    def _defaults_from_state_dir(self) -> Settings:
        if self.queue_url is None:
            self.queue_url = f"sqlite:///{(self.state_dir / 'queue.db').as_posix()}"
        if self.default_model_dir is None:
            self.default_model_dir = self.state_dir / "models" / "default"
        return self

    # Derived locations -------------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        return self.state_dir / "cache" / "embeddings.sqlite"

    @property
    def embedding_cache(self) -> str | Path:
        """Where the embedding cache lives: ``embedding_cache_url``, else the SQLite file `cache_path`
        (open it with `classifiers.open_embedding_cache`)."""
        return self.embedding_cache_url or self.cache_path

    @property
    def work_root(self) -> str:
        return self.work_url or str(self.state_dir / "work")

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    def model_folder(self, model_dir: str | Path | None = None) -> Path:
        """The model folder a run uses: ``model_dir`` if given, else ``default_model_dir``."""
        return Path(model_dir or self.default_model_dir or self.state_dir / "models" / "default")


def load_settings(**overrides: Any) -> Settings:
    """Build settings from file + environment, then apply non-None overrides (CLI flags)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
