"""One parser for the database URLs in the settings (queue, LLM store, embedding cache)."""

from __future__ import annotations

import sqlalchemy as sa

from shelfwise.errors import ConfigError

__all__ = ["database_url"]


def database_url(text: str | sa.URL, *, setting: str, example: str) -> sa.URL:
    """``text`` as a SQLAlchemy URL; ``postgresql://`` gets the psycopg 3 driver shelfwise ships with.

    A URL SQLAlchemy cannot read is a `ConfigError` naming the ``setting`` and an ``example`` of a good
    value; which backends a store accepts is the caller's check.
    """
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            f"{setting} {str(text)!r} is not a valid database URL ({exc}); use e.g. {example}"
        ) from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url
