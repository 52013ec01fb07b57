"""The report's sections, in the order they are shown: :data:`SECTIONS`.

Each section is one :data:`SectionBuilder`: it computes its typed figures (``_fig_*`` modules, pure),
adds its headline figures to ``figs`` (one history row) and its export tables to ``tables``, and returns
the rendered :class:`Section` (prose, charts and display tables from the ``_prose_*`` modules). To add a
section, write one such function and list it in :data:`SECTIONS`; the trends section is added when the
history is known (``_build``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from shelfwise.reports._fig_catalog import catalog_figures, taxonomy_figures
from shelfwise.reports._fig_change import drift_figures, reviewer_figures
from shelfwise.reports._fig_run import quality_figures, volume_figures
from shelfwise.reports._model import Section
from shelfwise.reports._prose_catalog import catalog_section, taxonomy_section
from shelfwise.reports._prose_change import drift_section, reviewers_section, trends
from shelfwise.reports._prose_run import quality_section, volumes_section
from shelfwise.reports._sources import RunInputs
from shelfwise.reports._taxonomy_change import taxonomy_change
from verification.audit_bar import AuditBars

__all__ = ["SECTIONS", "ReportContext", "SectionBuilder", "build_sections", "trends"]


@dataclass(frozen=True)
class ReportContext:
    """What every section may need besides the run's inputs."""

    target: float  # the precision target of the run
    now: dt.datetime  # when the report is generated (ages of open items)


#: Computes one section; ``None`` leaves the section out of this run's report.
SectionBuilder = Callable[[RunInputs, dict[str, Any], dict[str, pl.DataFrame], ReportContext], Section | None]


def taxonomy_change_section(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section | None:
    """Only on the night the taxonomy changed."""
    return taxonomy_change(inp.summary.as_dict(), figs, tables)


def volumes(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section:
    v = volume_figures(inp)
    figs.update(v.headline_figures())
    tables.update(v.tables(inp.run_id))
    sec = volumes_section(v, notes=inp.missing.get("volumes", []))
    retried = inp.summary.retries  # transient errors the night rode out (docs/faults.md)
    sec.facts.append(
        (
            "retried after transient errors: queue database / object store",
            f"{retried.get('queue_db', 0)} / {retried.get('storage', 0)}",
        )
    )
    return sec


def quality(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section:
    q = quality_figures(
        inp, classified=int(figs.get("classified", 0)), auto_rate=figs.get("auto_rate"), target=ctx.target
    )
    figs.update(q.headline_figures())
    tables.update(q.tables())
    sec = quality_section(q, notes=inp.missing.get("queue", []))
    bar = inp.summary.thresholds.get("audit_bar") or {}
    if bar.get(
        "floors"
    ):  # the audit proved a scope below target: its bar was raised (verification/audit_bar.py)
        sec.headline += " " + AuditBars.from_dict(bar).headline()
        figs["audit_bar"] = bar["floors"]
    return sec


def catalog_health(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section:
    c = catalog_figures(inp)
    quarantined = int(figs.get("quarantined", 0))
    figs.update(c.headline_figures(quarantined=quarantined))
    tables.update(c.tables())
    return catalog_section(c, quarantined=quarantined)


def taxonomy_health(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section:
    t = taxonomy_figures(inp)
    figs.update(t.headline_figures())
    tables.update(t.tables())
    return taxonomy_section(t, notes=inp.missing.get("taxonomy", []))


def drift(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section:
    d = drift_figures(inp)
    figs.update(d.headline_figures())
    tables.update(d.tables())
    return drift_section(
        d,
        previous_run_id=inp.previous_run_id,
        summary=inp.summary,
        previous_summary=inp.previous_summary,
        notes=inp.missing.get("drift", []),
    )


def reviewers(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> Section:
    r = reviewer_figures(inp, now=ctx.now)
    figs.update(r.headline_figures())
    tables.update(r.tables())
    return reviewers_section(r, notes=inp.missing.get("queue", []), queue_ok=inp.queue_ok)


#: The sections of a report, in order (the trends section follows them; see ``_build``).
SECTIONS: tuple[SectionBuilder, ...] = (
    taxonomy_change_section,
    volumes,
    quality,
    catalog_health,
    taxonomy_health,
    drift,
    reviewers,
)


def build_sections(
    inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], ctx: ReportContext
) -> list[Section]:
    """Every section of :data:`SECTIONS`, in order (figures and tables accumulate in ``figs``/``tables``)."""
    built = (build(inp, figs, tables, ctx) for build in SECTIONS)
    return [sec for sec in built if sec is not None]
