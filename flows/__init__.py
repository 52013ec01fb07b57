"""Prefect flows and deployments for shelfwise (orchestration only; the work lives in shelfwise.pipeline).

Prefect is imported lazily: `run_night` starts the run's own Prefect server first, and Prefect reads
its API URL when it is first imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["nightly_reclassification", "run_night"]


def __getattr__(name: str) -> Any:
    if name == "nightly_reclassification":
        from flows.nightly import nightly_reclassification

        return nightly_reclassification
    if name == "run_night":
        from flows.run import run_night

        return run_night
    raise AttributeError(name)
