"""Matplotlib charts rendered to PNG bytes (Agg backend, one consistent, quiet style)."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

__all__ = [
    "PALETTE",
    "barh",
    "grouped_barh",
    "leaf",
    "pair_labels",
    "reliability",
    "rendering",
    "short_path",
    "stacked_bars",
    "trend",
]

#: False while a report is built only for its figures (markdown): chart functions then return b"".
_RENDER: ContextVar[bool] = ContextVar("shelfwise_report_render", default=True)


@contextmanager
def rendering(enabled: bool) -> Iterator[None]:
    token = _RENDER.set(enabled)
    try:
        yield
    finally:
        _RENDER.reset(token)


def _skippable(fn: Callable[..., bytes]) -> Callable[..., bytes]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        return fn(*args, **kwargs) if _RENDER.get() else b""

    return wrapper


PALETTE = {
    "main": "#0f766e",
    "second": "#64748b",
    "accent": "#d97706",
    "bad": "#be123c",
    "good": "#15803d",
    "light": "#99d5cf",
    "grid": "#e5e7eb",
    "text": "#1f2937",
    "muted": "#6b7280",
}
SERIES = ["#0f766e", "#d97706", "#64748b", "#be123c", "#7c3aed", "#0369a1", "#a16207", "#15803d"]
#: Charts are drawn at 1.5x their display size (crisp on high-density screens): a half-width chart is
#: 4.55 in x 150 dpi = 682 px drawn, shown 455 px wide, so two sit side by side; a wide one fills the row.
HALF = 4.55
FULL = 9.3
DPI = 150
DISPLAY_SCALE = 1.5


def short_path(path: str | None, keep: int = 2, width: int = 46) -> str:
    """'A > B > C > D' -> '… > C > D': the last ``keep`` segments (fewer if needed to fit ``width``)."""
    if not path:
        return "(none)"
    parts = [p.strip() for p in str(path).split(">")]
    for k in range(min(keep, len(parts)), 0, -1):
        text = " > ".join(parts[-k:])
        if k < len(parts):
            text = "… > " + text
        if len(text) <= width:
            return text
    last = parts[-1]
    return last if len(last) <= width else last[: width - 1] + "…"


def pair_labels(a: str | None, b: str | None, width: int = 34) -> str:
    """'from → to' by leaf name; when both leaves are called the same, each side also shows the segment
    where the two paths part ('Baby Boys' Clothes > … > Caps → Baby Girls' Clothes > … > Caps')."""
    la, lb = leaf(a, width), leaf(b, width)
    if la != lb or not a or not b:
        return f"{la} → {lb}"
    pa, pb = [x.strip() for x in a.split(">")], [x.strip() for x in b.split(">")]
    k = 1
    while k < min(len(pa), len(pb)) and pa[-k] == pb[-k]:
        k += 1

    def label(parts: list[str]) -> str:
        if k > len(parts):
            return parts[-1]
        return parts[-k] + (" > … > " if k > 2 else " > ") + parts[-1]

    return f"{label(pa)} → {label(pb)}"


def leaf(path: str | None, width: int = 30) -> str:
    """The last segment of a category path (for 'from -> to' labels)."""
    if not path:
        return "(none)"
    text = str(path).split(">")[-1].strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _style(ax: Axes, *, grid_axis: Literal["both", "x", "y"] = "x") -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#cbd5e1")
    ax.tick_params(colors=PALETTE["text"], labelsize=9, length=0)
    ax.grid(axis=grid_axis, color=PALETTE["grid"], linewidth=0.8)
    ax.set_axisbelow(True)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def _fmt(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{value:.0%}" if value >= 0.1 or value == 0 else f"{value:.1%}"
    if kind == "float":
        return f"{value:.2f}"
    return f"{round(value):,}"


@_skippable
def barh(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str = "",
    kind: str = "int",
    colors: Sequence[str] | str | None = None,
    ref: tuple[float, str] | None = None,
    wide: bool | None = None,
) -> bytes:
    """Horizontal bars, largest first as given, each annotated with its value (wide when labels are long);
    ``ref``: a reference value and its label, drawn as a dashed line."""
    n = max(1, len(labels))
    if wide is None:
        wide = max((len(x) for x in labels), default=0) > 26
    fig, ax = plt.subplots(figsize=(FULL if wide else HALF, 0.95 + 0.3 * n), layout="constrained")
    ys = list(range(n))[::-1]
    color = colors if colors is not None else PALETTE["main"]
    ax.barh(ys[: len(values)], values, color=color, height=0.62)
    ax.set_yticks(ys[: len(labels)], labels=list(labels))
    top = max([float(v) for v in values] + [ref[0] if ref else 0.0, 1e-9])
    for y, v in zip(ys, values, strict=False):
        ax.text(
            float(v) + top * 0.01, y, _fmt(float(v), kind), va="center", fontsize=8.5, color=PALETTE["text"]
        )
    if ref is not None:
        ax.axvline(ref[0], color=PALETTE["accent"], linestyle="--", linewidth=1.2)
        ax.text(ref[0], n - 0.35, f" {ref[1]}", color=PALETTE["accent"], fontsize=8.5, va="bottom")
    ax.set_xlim(0, top * 1.15)
    if kind == "pct":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0%}"))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.set_xlabel(xlabel, fontsize=9, color=PALETTE["muted"])
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, color=PALETTE["text"])
    _style(ax)
    return _png(fig)


@_skippable
def grouped_barh(
    labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, kind: str = "pct"
) -> bytes:
    """Two or more series side by side per label (e.g. previous vs tonight's shares)."""
    n = max(1, len(labels))
    k = max(1, len(series))
    fig, ax = plt.subplots(figsize=(HALF, 1.0 + 0.22 * n * k + 0.1 * n), layout="constrained")
    height = 0.8 / k
    base = list(range(n))[::-1]
    top = 1e-9
    for j, (name, vals) in enumerate(series.items()):
        ys = [b + (k - 1 - 2 * j) * height / 2 for b in base]
        ax.barh(ys, vals, height=height * 0.92, color=SERIES[j % len(SERIES)], label=name)
        for y, v in zip(ys, vals, strict=False):
            ax.text(
                float(v), y, " " + _fmt(float(v), kind), va="center", fontsize=7.5, color=PALETTE["muted"]
            )
        top = max([top, *[float(v) for v in vals]])
    ax.set_yticks(base, labels=list(labels))
    ax.set_xlim(0, top * 1.18)
    if kind == "pct":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0%}"))
    ax.legend(frameon=False, fontsize=8.5, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=len(series))
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, color=PALETTE["text"])
    _style(ax)
    return _png(fig)


@_skippable
def stacked_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str = "",
    colors: Sequence[str] | None = None,
) -> bytes:
    """Vertical bars per category, stacked by series (e.g. open items per age bucket and queue)."""
    fig, ax = plt.subplots(figsize=(HALF, 3.0), layout="constrained")
    bottom = [0.0] * len(categories)
    palette = list(colors or SERIES)
    for j, (name, vals) in enumerate(series.items()):
        ax.bar(list(categories), vals, bottom=bottom, color=palette[j % len(palette)], label=name, width=0.62)
        bottom = [b + float(v) for b, v in zip(bottom, vals, strict=True)]
    for x, total in enumerate(bottom):
        if total:
            ax.text(
                x, total, f"{int(total):,}", ha="center", va="bottom", fontsize=8.5, color=PALETTE["text"]
            )
    ax.set_ylim(0, max(bottom + [1.0]) * 1.18)
    ax.set_xlim(-0.6, max(len(categories), 6) - 0.4)  # a lone day stays a bar, not a wall
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    ax.set_ylabel(ylabel, fontsize=9, color=PALETTE["muted"])
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=8.5, ncols=min(4, len(series)), loc="upper right")
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, color=PALETTE["text"])
    _style(ax, grid_axis="y")
    return _png(fig)


@_skippable
def reliability(bins: Sequence[Mapping[str, float]], *, title: str) -> bytes:
    """Reliability diagram: mean confidence vs reviewer-confirmed share correct, marker size = answers."""
    fig, (ax, axh) = plt.subplots(
        2, 1, figsize=(HALF, 4.3), gridspec_kw={"height_ratios": [3.2, 1]}, sharex=True, layout="constrained"
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color=PALETTE["second"], linewidth=1, label="perfect calibration")
    xs = [b["mean_confidence"] for b in bins]
    ys = [b["accuracy"] for b in bins]
    ns = [b["n"] for b in bins]
    biggest = max(ns + [1])
    ax.plot(xs, ys, color=PALETTE["main"], linewidth=1.6)
    ax.scatter(
        xs,
        ys,
        s=[30 + 170 * n / biggest for n in ns],
        color=PALETTE["main"],
        zorder=3,
        label="reviewer-confirmed",
    )
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share confirmed correct", fontsize=9, color=PALETTE["muted"])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0%}"))
    ax.legend(frameon=False, fontsize=8.5, loc="upper left")
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, color=PALETTE["text"])
    _style(ax, grid_axis="both")
    widths = [b["hi"] - b["lo"] for b in bins]
    axh.bar(
        [b["lo"] for b in bins], ns, width=[w * 0.9 for w in widths], align="edge", color=PALETTE["light"]
    )
    axh.set_ylabel("answers", fontsize=9, color=PALETTE["muted"])
    axh.set_xlabel("model confidence", fontsize=9, color=PALETTE["muted"])
    axh.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    axh.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0%}"))
    _style(axh, grid_axis="y")
    return _png(fig)


@_skippable
def trend(
    x: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    kind: str = "pct",
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None,
    target: float | None = None,
    target_label: str = "",
) -> bytes:
    """Line chart over runs (x = short run labels), optional confidence band and target line."""
    fig, ax = plt.subplots(figsize=(HALF, 2.7), layout="constrained")
    idx = list(range(len(x)))

    def clean(vals: Sequence[float | None]) -> list[float]:
        return [math.nan if v is None else float(v) for v in vals]

    for j, (name, vals) in enumerate(series.items()):
        ys = clean(vals)
        if band is not None and j == 0:
            lo, hi = clean(band[0]), clean(band[1])
            ax.fill_between(idx, lo, hi, color=PALETTE["light"], alpha=0.45, linewidth=0)
            err = [
                [max(0.0, y - a) if not math.isnan(y + a) else 0.0 for y, a in zip(ys, lo, strict=True)],
                [max(0.0, b - y) if not math.isnan(y + b) else 0.0 for y, b in zip(ys, hi, strict=True)],
            ]
            ax.errorbar(
                idx, ys, yerr=err, fmt="none", ecolor=PALETTE["main"], elinewidth=1, capsize=3, label="95% CI"
            )
        ax.plot(idx, ys, marker="o", markersize=4, linewidth=1.6, color=SERIES[j % len(SERIES)], label=name)
    finite = [v for vals in series.values() for v in clean(vals) if not math.isnan(v)]
    if finite and min(finite) >= 0 and kind != "pct":
        ax.set_ylim(bottom=0, top=max(finite) * 1.15 if max(finite) > 0 else 1.0)
    if target is not None:
        ax.axhline(target, color=PALETTE["accent"], linestyle="--", linewidth=1.1, label=target_label or None)
    step = max(1, len(x) // 6)
    ax.set_xticks(idx[::step], labels=[x[i] for i in idx[::step]], fontsize=7.5)
    if kind == "pct":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=kind == "int", nbins=5))
    if len(series) > 1 or band is not None or target is not None:
        ax.legend(frameon=False, fontsize=7.5, loc="best")
    fig.suptitle(title, x=0.01, ha="left", fontsize=10, color=PALETTE["text"])
    _style(ax, grid_axis="y")
    return _png(fig)
