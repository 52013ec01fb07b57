"""Prose, charts and display tables of the catalog and taxonomy sections (figures from ``_fig_catalog``)."""

from __future__ import annotations

import polars as pl

from shelfwise.reports import _charts as charts
from shelfwise.reports._fig_catalog import CatalogFigures, TaxonomyFigures
from shelfwise.reports._model import Chart, Section, Table, ci, num, pct, plural, share
from shelfwise.reports._prose_run import display_frame, moves_chart

__all__ = ["catalog_section", "taxonomy_section"]


# --------------------------------------------------------------------------------------------------
# Catalog health
# --------------------------------------------------------------------------------------------------
def catalog_section(c: CatalogFigures, *, quarantined: int) -> Section:
    sec = Section("catalog", "Catalog health", "")
    _catalog_text(sec, c, quarantined)
    _corrections(sec, c)
    _hot_spots(sec, c)
    return sec


def _catalog_text(sec: Section, c: CatalogFigures, quarantined: int) -> None:
    """The headline (disagreement, confirmed suspects) and the key facts."""
    n_cur, n_dis, sus = c.with_current, c.disagree, c.suspect_answers
    head = (
        f"{pct(share(n_dis, n_cur), 1)} of the {num(n_cur)} products that have a category disagree with "
        f"shelfwise ({num(c.flagged_suspect)} confidently enough to be flagged as suspect). "
    )
    if sus:
        head += (
            f"Reviewers confirmed {pct(share(c.confirmed, sus))} of the suspects they checked "
            f"({num(c.confirmed)} of {num(sus)}; 95% CI {ci(c.confirmed_lo, c.confirmed_hi)})."
        )
    else:
        head += "No reviewer has checked a suspect yet, so the rate is not confirmed."
        sec.notes.append("no answers yet on the suspect queue: the misclassification rate is not confirmed")
    sec.headline = head
    waiting = c.awaiting_review
    sec.facts = [
        ("products with a current category", num(n_cur)),
        ("disagree with shelfwise", f"{num(n_dis)} ({pct(share(n_dis, n_cur), 1)})"),
        ("flagged suspect (confident disagreement)", num(c.flagged_suspect)),
        ("suspects confirmed by reviewers", f"{num(c.confirmed)} of {num(sus)}"),
        (
            "uncategorized in the catalog (no current category)",
            f"{num(c.uncategorized)} ({num(c.uncategorized_auto)} now auto-classified)",
        ),
        (
            "without an accepted category tonight",
            (
                f"{num(waiting + quarantined)} ({num(waiting)} "
                f"awaiting review, {num(quarantined)} quarantined)"
            ),
        ),
        ("classified only to the top level", num(c.top_only)),
    ]


def _corrections(sec: Section, c: CatalogFigures) -> None:
    """The current categories reviewers corrected most (chart and table)."""
    if c.corrections is not None:
        top = c.corrections
        shown = top.head(10)
        sec.charts.append(
            Chart(
                "Categories with the most corrections",
                charts.barh(
                    [charts.short_path(x) for x in shown["current_category_path"]],
                    shown["corrections"].to_list(),
                    title="Current categories reviewers corrected most",
                    xlabel="products moved by a reviewer",
                    colors=charts.PALETTE["bad"],
                ),
                "bar chart of current categories with most reviewer corrections",
            )
        )
        sec.tables.append(
            Table(
                "Categories with the most reviewer corrections",
                display_frame(top.head(10), path_cols=("current_category_path", "most often moved to")),
            )
        )
    else:
        sec.notes.append("no reviewer corrections yet (no answer moved a product off its current category)")


def _hot_spots(sec: Section, c: CatalogFigures) -> None:
    """Where the catalog and shelfwise disagree most, and where reviewers overrule the suggestion."""
    hot, rev_pairs = c.hot_spots, c.reviewer_confusion
    if not hot.is_empty():
        sec.charts.append(
            moves_chart(
                "Confusion hot-spots",
                hot,
                title="Where the catalog and shelfwise disagree most (current → predicted)",
                alt="bar chart of the most frequent current-to-predicted category pairs",
            )
        )
        sec.tables.append(
            Table(
                "Confusion hot-spots: current category vs shelfwise's prediction",
                display_frame(hot.head(12).drop("kind"), path_cols=("from_path", "to_path")).rename(
                    {"from_path": "current", "to_path": "predicted"}
                ),
            )
        )
    if not rev_pairs.is_empty():
        sec.tables.append(
            Table(
                "Confusion hot-spots: model suggestion vs reviewer's choice",
                display_frame(rev_pairs.head(12).drop("kind"), path_cols=("from_path", "to_path")).rename(
                    {"from_path": "suggested", "to_path": "reviewer chose"}
                ),
            )
        )
    elif c.reviewer_answers:
        sec.text.append("Reviewers kept every suggestion they answered: no suggestion-vs-reviewer confusion.")


# --------------------------------------------------------------------------------------------------
# Taxonomy health
# --------------------------------------------------------------------------------------------------
def taxonomy_section(t: TaxonomyFigures, *, notes: list[str]) -> Section:
    sec = Section("taxonomy", "Taxonomy health", "")
    sec.notes += notes
    top, median = t.busiest, t.median
    if top:
        sec.charts.append(
            Chart(
                "Overloaded nodes",
                charts.barh(
                    [charts.short_path(p) for p, _ in top],
                    [n for _, n in top],
                    title="Busiest categories (predicted) vs the median category",
                    xlabel="products",
                    ref=(median, f"median {median:g}"),
                ),
                "bar chart of the categories with the most predicted products, with the median marked",
            )
        )
    if not t.loaded:
        sec.headline = (
            f"Products landed in {plural(t.categories_predicted, 'category', 'categories')}; "
            "the taxonomy itself could not be loaded, so empty and deprecated nodes are unknown."
        )
        return sec
    empty, nodes = t.empty, t.node_count
    deprecated = t.deprecated or {}
    sec.headline = (
        f"{num(empty.height)} of {num(nodes)} taxonomy nodes ({pct(share(empty.height, nodes))}) hold no "
        f"product, current or predicted; {plural(t.deprecated_items, 'product')} still sit on "
        f"{plural(len(deprecated), 'category path', 'category paths')} that are not in the taxonomy any more."
    )
    if top and median:
        sec.headline += f" The busiest category holds {top[0][1] / median:.0f}× the median."
    _taxonomy_facts(sec, t)
    _taxonomy_tables(sec, t)
    return sec


def _taxonomy_facts(sec: Section, t: TaxonomyFigures) -> None:
    empty, nodes, deprecated = t.empty, t.node_count, t.deprecated or {}
    only_pred, never_pred = t.only_predicted or [], t.never_predicted or []
    sec.facts = [
        ("taxonomy nodes", num(nodes)),
        ("empty nodes", f"{num(empty.height)} ({num(t.empty_leaves)} leaves)"),
        ("nodes only in predictions (no product filed there today)", num(len(only_pred))),
        ("current categories shelfwise never predicts", num(len(never_pred))),
        ("products on deprecated paths", f"{num(t.deprecated_items)} on {num(len(deprecated))} paths"),
        ("human labels on paths missing from the taxonomy", num(len(t.labels_missing or []))),
    ]


def _taxonomy_tables(sec: Section, t: TaxonomyFigures) -> None:
    """Empty nodes by branch, products on deprecated paths, nodes used on one side only."""
    empty, deprecated = t.empty, t.deprecated or {}
    only_pred, never_pred = t.only_predicted or [], t.never_predicted or []
    if not empty.is_empty():
        branch = t.by_branch()
        shown = branch.filter(pl.col("empty") > 0).head(12)
        sec.charts.append(
            Chart(
                "Empty nodes by branch",
                charts.barh(
                    [charts.short_path(x, keep=1, width=38) for x in shown["top_level"]],
                    shown["share empty"].to_list(),
                    title="Share of nodes with no product, by top-level branch",
                    kind="pct",
                    colors=charts.PALETTE["second"],
                ),
                "bar chart of the share of empty taxonomy nodes per branch",
            )
        )
        sec.tables.append(
            Table(
                "Empty nodes by top-level branch", display_frame(branch.head(15), pct_cols=("share empty",))
            )
        )
    if deprecated:
        sec.tables.append(
            Table(
                "Products left on category paths that are not in the taxonomy", t.deprecated_frame().head(15)
            )
        )
    if only_pred or never_pred:
        ex = pl.DataFrame(
            {
                "set": ["only in predictions", "current categories never predicted"],
                "nodes": [len(only_pred), len(never_pred)],
                "examples": [
                    "; ".join(charts.short_path(p) for p in only_pred[:3]),
                    "; ".join(charts.short_path(p) for p in never_pred[:3]),
                ],
            }
        )
        sec.tables.append(Table("Nodes used on one side only", ex))
    if not t.has_labels:
        sec.notes.append("no human labels yet, so label paths could not be checked against the taxonomy")
