"""The shelfwise exception tree. Retries and routing decide by class, never by message text.

ShelfwiseError
 ├── ConfigError            a setting or flag has a bad value
 ├── TaxonomyError          a taxonomy file is invalid (the message names the line and the fix)
 ├── CatalogError           a catalog file is unusable as a whole (bad rows are quarantined instead)
 ├── ModelError             a model directory is missing or incompatible
 ├── LLMResponseError       the LLM answered but the answer is unusable (item goes to review)
 └── TransientServiceError  timeout, HTTP 429 or 5xx: retried with backoff
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "ConfigError",
    "LLMResponseError",
    "ModelError",
    "ShelfwiseError",
    "TaxonomyError",
    "TransientServiceError",
]


class ShelfwiseError(Exception):
    """Base class of every error shelfwise raises on purpose."""


class ConfigError(ShelfwiseError):
    """A setting, flag or configuration file has a bad value."""


class TaxonomyError(ShelfwiseError):
    """A taxonomy file cannot be loaded or fails validation."""


class CatalogError(ShelfwiseError):
    """A catalog or reviews file is unusable as a whole."""


class ModelError(ShelfwiseError):
    """A trained model directory is missing, incomplete or incompatible."""


class LLMResponseError(ShelfwiseError):
    """The LLM answered, but the answer cannot be accepted (broken JSON, unknown category)."""


class TransientServiceError(ShelfwiseError):
    """A remote service failed in a way worth retrying (timeout, HTTP 429, HTTP 5xx)."""
