"""The report as data: cards, sections, charts, tables (rendered to HTML and markdown elsewhere)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shelfwise.summary import RunSummary


@dataclass
class Chart:
    title: str
    png: bytes
    alt: str


@dataclass
class Table:
    caption: str
    frame: pl.DataFrame


@dataclass
class Card:
    label: str
    value: str
    sub: str = ""
    tone: str = "neutral"  # neutral | good | warn | bad


@dataclass
class Section:
    key: str
    title: str
    headline: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


@dataclass
class GovernanceReport:
    """Everything a report shows: headline figures (one history row), cards, sections, export tables."""

    run_id: str
    generated_at: str
    headline: str
    figures: dict[str, Any]
    cards: list[Card]
    sections: list[Section]
    tables: dict[str, pl.DataFrame]
    summary: RunSummary


def num(n: Any) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    return f"{int(n):,}"


def pct(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if digits == 0 and 0 < abs(x) < 0.01:
        return f"{x:.1%}"
    return f"{x:.{digits}%}"


def ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "n/a"
    return f"{lo * 100:.0f}–{hi * 100:.0f}%"


def share(a: float, b: float) -> float | None:
    return (a / b) if b else None


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{num(n)} {word if n == 1 else (many or word + 's')}"


def age(days: float | None) -> str:
    """0.02 -> 'under an hour', 0.3 -> '7 hours', 2.54 -> '2.5 days'."""
    if days is None or (isinstance(days, float) and math.isnan(days)):
        return "n/a"
    hours = days * 24
    if hours < 1:
        return "under an hour"
    if days < 1:
        return f"{hours:.0f} hour{'s' if round(hours) != 1 else ''}"
    return f"{days:.1f} days"


def money(usd: Any) -> str:
    """US dollars: cents for large sums, four decimals for the fractions of a cent LLM runs cost."""
    try:
        v = float(usd or 0.0)
    except (TypeError, ValueError):
        return "n/a"
    return f"${v:,.2f}" if v >= 1 or v == 0 else f"${v:.4f}"
