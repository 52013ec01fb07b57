"""Prefect flows and deployments for shelfwise (orchestration only; the work lives in shelfwise.pipeline)."""

from flows.nightly import nightly_reclassification

__all__ = ["nightly_reclassification"]
