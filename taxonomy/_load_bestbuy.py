"""Reader for Best Buy's categories.json, nested (``subCategories``) or flat (``path`` lists) (internal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shelfwise.errors import TaxonomyError

from ._errors import Problem
from ._node import RawNode
from ._source import TaxonomyFormat, empty_error, read_text, short
from ._tree import Taxonomy, assemble


def _bestbuy_data(file: Path, source: str) -> list[Any]:
    """The file's list of category objects (a bare list, or under ``categories`` / ``subCategories``)."""
    text = read_text(file, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaxonomyError(
            f"taxonomy {source} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
            f"fix: repair the JSON or pass the right format="
        ) from None
    if isinstance(data, dict):
        data = data.get("categories", data.get("subCategories"))
    if not isinstance(data, list):
        raise TaxonomyError(
            f"taxonomy {source}: expected a JSON list of category objects (or {{'categories': [...]}}); fix: "
            f"pass a Best Buy categories.json or another layout with format="
        )
    if not data:
        raise empty_error(source, "the JSON list has no categories")
    return data


class _BestBuyWalk:
    """One pass over Best Buy entries: nested (``subCategories`` hold the children) or flat (each entry
    carries its ``path`` from the root). Collects nodes, ancestors named only in paths, and problems."""

    def __init__(self, flat: bool) -> None:
        self.flat = flat
        self.problems: list[Problem] = []
        self.entries: dict[str, RawNode] = {}
        self.implied: dict[str, RawNode] = {}
        self.repeats = 0
        self.stripped = 0
        self.counter = 0

    def visit(self, obj: Any, enclosing: str | None) -> None:
        self.counter += 1
        where = f"entry {self.counter}"
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("id"), (str, int))
            or not str(obj["id"]).strip()
        ):
            self.problems.append(
                Problem(where, f"entry without an 'id': {short(json.dumps(obj)[:200])}", "give it an id")
            )
            return
        node_id = str(obj["id"]).strip()
        where = f"entry {self.counter} (id {node_id!r})"
        name = obj.get("name")
        if isinstance(name, str) and name != name.strip():
            self.stripped += 1
        parent: str | None = enclosing
        path = obj.get("path")
        if self.flat and isinstance(path, list):
            ok, parent = self._path_parent(path, node_id, where)
            if not ok:
                return
        self._record(RawNode(node_id, name if isinstance(name, str) else "", parent, where))
        if not self.flat:
            for child in _as_list(obj.get("subCategories"), where, "subCategories", self.problems):
                self.visit(child, node_id)

    def _path_parent(self, path: list[Any], node_id: str, where: str) -> tuple[bool, str | None]:
        """Check a flat entry's ``path``, note its ancestors; (usable, parent id)."""
        ids = [str(p.get("id")) for p in path if isinstance(p, dict)]
        if len(ids) != len(path) or not ids or ids[-1] != node_id:
            problem = f"'path' does not end with the entry itself ({ids[-3:]})"
            self.problems.append(Problem(where, problem, "fix the path list"))
            return False, None
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            problem = f"'path' lists {dup!r} twice (a parent cycle)"
            self.problems.append(Problem(where, problem, "remove the repeated level"))
            return False, None
        for pos, step in enumerate(path[:-1]):
            step_id = ids[pos]
            if step_id not in self.implied:
                step_name = step.get("name")
                self.implied[step_id] = RawNode(
                    step_id,
                    step_name if isinstance(step_name, str) else "",
                    ids[pos - 1] if pos else None,
                    f"{where} 'path'",
                )
        return True, (ids[-2] if len(ids) > 1 else None)

    def _record(self, raw: RawNode) -> None:
        previous = self.entries.get(raw.id)
        if previous is None:
            self.entries[raw.id] = raw
        elif previous.name.strip() == raw.name.strip():
            self.repeats += 1  # the same category listed again (cross-listed under a second parent)
        else:
            self.problems.append(
                Problem(
                    raw.where,
                    f"duplicate id {raw.id!r} with another name {raw.name!r} (first on {previous.where} "
                    f"as {previous.name!r})",
                    "give each category its own id",
                )
            )

    def drop_unnamed_leaves(self) -> list[RawNode]:
        """Best Buy marks unpublished pages with ``"name": null``: unnamed entries no one descends from."""
        in_use = {r.parent_id for r in self.entries.values()} | {r.parent_id for r in self.implied.values()}
        unnamed = [r for r in self.entries.values() if not r.name.strip() and r.id not in in_use]
        for raw in unnamed:
            del self.entries[raw.id]
        return unnamed


def _dangling_refs(data: list[Any], known: set[str]) -> set[str]:
    """Ids a flat file names only inside ``subCategories``, with no entry of their own."""
    return {
        str(ref.get("id"))
        for item in data
        if isinstance(item, dict)
        for ref in _list_or_empty(item.get("subCategories"))
        if isinstance(ref, dict) and str(ref.get("id")) not in known
    }


def _bestbuy_warnings(
    walk: _BestBuyWalk, data: list[Any], unnamed: list[RawNode], added: list[RawNode]
) -> list[str]:
    warnings: list[str] = []
    if unnamed:
        warnings.append(
            f"{len(unnamed)} unnamed leaf entries were skipped: " + ", ".join(r.where for r in unnamed[:5])
        )
    if added:
        warnings.append(
            f"{len(added)} ancestor categories appear only inside 'path' lists and were added with the "
            f"name given there: " + ", ".join(repr(r.id) for r in added[:5])
        )
    if walk.repeats:
        warnings.append(f"{walk.repeats} entries repeat an id already listed; the first was kept")
    if walk.flat and (dangling := _dangling_refs(data, set(walk.entries) | {r.id for r in added})):
        warnings.append(
            f"{len(dangling)} ids named only in 'subCategories' have no entry of their own (no path) and "
            f"were left out: " + ", ".join(repr(i) for i in sorted(dangling)[:3])
        )
    if walk.stripped:
        warnings.append(f"{walk.stripped} names had leading/trailing spaces, which were removed")
    return warnings


def load_bestbuy(file: Path, source: str, lang: str | None) -> Taxonomy:
    data = _bestbuy_data(file, source)
    walk = _BestBuyWalk(flat=all(isinstance(item, dict) and "path" in item for item in data))
    for item in data:
        walk.visit(item, None)
    unnamed = walk.drop_unnamed_leaves()
    added = [r for r in walk.implied.values() if r.id not in walk.entries]
    return assemble(
        list(walk.entries.values()) + added,
        source=source,
        fmt=TaxonomyFormat.BESTBUY_JSON.value,
        lang=lang,
        problems=walk.problems,
        warnings=_bestbuy_warnings(walk, data, unnamed, added),
    )


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_list(value: Any, where: str, key: str, problems: list[Problem]) -> list[Any]:
    """A JSON field that must be a list (or absent/null); anything else is reported, not iterated."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    problems.append(
        Problem(
            where,
            f"{key!r} is a JSON {type(value).__name__}, not a list",
            f"write {key} as a list of entries",
        )
    )
    return []
