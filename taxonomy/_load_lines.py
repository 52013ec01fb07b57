"""Readers for text layouts: id lines (Google, Shopify) and one path a line (internal)."""

from __future__ import annotations

import re
from pathlib import Path

from ._build import add_path_nodes
from ._errors import Problem
from ._node import RawNode
from ._source import ATTRIBUTE_MARKERS, TaxonomyFormat, empty_error, raise_attribute_list, short, text_lines
from ._text import join_path, split_path
from ._tree import Taxonomy, assemble


def load_id_lines(
    file: Path, source: str, fmt: TaxonomyFormat, lang: str | None, pattern: re.Pattern[str], layout: str
) -> Taxonomy:
    entries: list[tuple[str, str, str]] = []
    problems: list[Problem] = []
    for lineno, line in enumerate(text_lines(file, source), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if any(marker in stripped for marker in ATTRIBUTE_MARKERS):
                raise_attribute_list(source)
            continue
        match = pattern.match(stripped)
        if match is None:
            problems.append(
                Problem(
                    f"line {lineno}",
                    f"expected {layout}, got {short(stripped)!r}",
                    "write the line in that layout, or pass the right format= (see TaxonomyFormat)",
                )
            )
            continue
        node_id, node_path = match.group(1), match.group(2)
        if "/TaxonomyAttribute/" in node_id:
            raise_attribute_list(source)
        entries.append((node_id, node_path, f"line {lineno}"))
    if not entries and not problems:
        raise empty_error(source, "no category lines after the '#' header")
    return from_id_paths(entries, source, fmt, lang, problems, add_hint="a line for it with its own id")


def from_id_paths(
    entries: list[tuple[str, str, str]],
    source: str,
    fmt: TaxonomyFormat,
    lang: str | None,
    problems: list[Problem],
    *,
    add_hint: str,
) -> Taxonomy:
    """Nodes with ids and full paths: the parent is the node whose path is the path minus its last level."""
    parsed: list[tuple[str, list[str], str]] = []
    by_path: dict[str, list[str]] = {}
    for node_id, raw_path, where in entries:
        segments = split_path(raw_path)
        if not segments:
            problems.append(Problem(where, f"category {node_id!r} has an empty path", "write its full path"))
            continue
        if any(not seg for seg in segments):
            level = segments.index("") + 1
            problems.append(
                Problem(
                    where,
                    f"empty name at level {level} in path {short(raw_path.strip())!r} of {node_id!r}",
                    "remove the doubled '>' or write the missing name",
                )
            )
            continue
        parsed.append((node_id, segments, where))
        by_path.setdefault(join_path(segments), []).append(node_id)
    raws: list[RawNode] = []
    orphans: set[str] = set()
    for node_id, segments, where in parsed:
        parent: str | None = None
        if len(segments) > 1:
            parent_path = join_path(segments[:-1])
            candidates = by_path.get(parent_path)
            if candidates and all(c in orphans for c in candidates):
                orphans.add(node_id)  # below an orphan: the orphan's line is the one to fix
                continue
            if not candidates:
                orphans.add(node_id)
                problems.append(
                    Problem(
                        where,
                        f"parent {short(parent_path)!r} of {node_id!r} is not in the file (orphan)",
                        f"add {add_hint}, or correct the path",
                    )
                )
                continue
            # Two ids for one path (Shopify translation collisions): prefer the id this id extends.
            parent = next((c for c in candidates if node_id.startswith(c + "-")), candidates[0])
        raws.append(RawNode(node_id, segments[-1], parent, where, join_path(segments)))
    return assemble(raws, source=source, fmt=fmt.value, lang=lang, problems=problems)


def load_paths_txt(file: Path, source: str, lang: str | None) -> Taxonomy:
    raws: list[RawNode] = []
    seen: set[str] = set()
    problems: list[Problem] = []
    listed: set[str] = set()
    for lineno, line in enumerate(text_lines(file, source), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        node_id = add_path_nodes(raws, seen, problems, stripped, where=f"line {lineno}")
        if node_id is not None:
            listed.add(node_id)
    if not raws and not problems:
        raise empty_error(source, "no path lines")
    return assemble(
        raws,
        source=source,
        fmt=TaxonomyFormat.PATHS_TXT.value,
        lang=lang,
        problems=problems,
        warnings=implicit_warning(raws, listed),
    )


def implicit_warning(raws: list[RawNode], listed: set[str]) -> list[str]:
    implied = [r for r in raws if r.id not in listed]
    if not implied:
        return []
    sample = ", ".join(repr(r.path) for r in implied[:3])
    return [f"{len(implied)} ancestor categories were not listed themselves and were added: {sample}"]
