"""The nightly deployment: `shelfwise serve` (or `python -m flows.deployment`) serves it with a cron schedule.

`prefect.yaml` at the repository root describes the same deployment for a Prefect server + work pool.
"""

from __future__ import annotations

from typing import Any

from flows.nightly import nightly_reclassification

__all__ = ["NIGHTLY_CRON", "serve_nightly"]

NIGHTLY_CRON = "0 2 * * *"


def serve_nightly(
    *,
    catalog: str,
    taxonomy: str | None = None,
    labelled: str | None = None,
    cron: str = NIGHTLY_CRON,
    settings_overrides: dict[str, Any] | None = None,
) -> None:
    """Block and run the nightly flow on ``cron`` (stop with SIGTERM / Ctrl-C).

    ``settings_overrides``: settings as JSON data (no secrets: the API key is read from the environment)."""
    parameters: dict[str, Any] = {"catalog": catalog, "taxonomy": taxonomy, "labelled": labelled}
    if settings_overrides:
        parameters["settings"] = settings_overrides
    nightly_reclassification.serve(
        name="nightly",
        cron=cron,
        parameters=parameters,
        tags=["shelfwise", "nightly"],
        description="Nightly catalog reclassification (train if needed, classify new and changed SKUs, "
        "route, enqueue, report).",
    )


if __name__ == "__main__":  # pragma: no cover
    import sys

    serve_nightly(
        catalog=sys.argv[1] if len(sys.argv) > 1 else "data/sample/catalog.csv",
        taxonomy="data/sample/taxonomy.txt",
        labelled="data/sample/labelled.parquet",
    )
