"""Prefect runs offline here: telemetry off, state inside the project's state folder.

Call :func:`configure_prefect` before the first ``import prefect``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["configure_prefect"]


def configure_prefect(state_dir: str | Path) -> None:
    """Point Prefect at ``<state_dir>/prefect`` and switch off analytics (never overrides the user's
    values)."""
    home = Path(state_dir).resolve() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
