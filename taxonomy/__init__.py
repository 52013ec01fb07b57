"""shelfwise's ground floor: every taxonomy format loaded into one immutable, validated tree.

    from taxonomy import load_taxonomy, TaxonomyIndex

    tax = load_taxonomy("shopify_categories_2025-01.en.txt")          # format auto-detected
    tax = tax.with_names(load_taxonomy("shopify_categories_2025-01.ko.txt"))  # Korean names, same gids
    tax.find_path("Luggage & Bags > Backpacks"), tax.deepest_known('["Watches >> Wrist Watches >> X"]')
    TaxonomyIndex(tax).search("백팩")

Imports nothing of shelfwise except :mod:`shelfwise.errors`.
"""

from __future__ import annotations

from ._diff import TaxonomyDiff, diff_taxonomies
from ._errors import Problem, TaxonomyValidationError, UnknownNodeError
from ._loaders import TaxonomyFormat, detect_format, load_taxonomy
from ._mapping import ExportStatus, TaxonomyMapping, export_targets, load_mapping
from ._node import Node
from ._text import normalise_path, path_id, split_path
from ._tree import Taxonomy
from .search import SearchHit, TaxonomyIndex

__all__ = [
    "ExportStatus",
    "Node",
    "Problem",
    "SearchHit",
    "Taxonomy",
    "TaxonomyDiff",
    "TaxonomyFormat",
    "TaxonomyIndex",
    "TaxonomyMapping",
    "TaxonomyValidationError",
    "UnknownNodeError",
    "detect_format",
    "diff_taxonomies",
    "export_targets",
    "load_mapping",
    "load_taxonomy",
    "normalise_path",
    "path_id",
    "split_path",
]
