"""What changed between two versions of a taxonomy, and where each old node went (internal).

    d = diff_taxonomies(old, new, mapping=load_mapping("map.csv", old, new))
    d.added, d.removed, d.renamed, d.moved      # node ids
    d.mapped                                     # removed old id -> new id (from the mapping file)
    d.target("p-1234abcd")                       # where an old node's products and labels go now

By id: a node kept under the same id is *renamed* when its own name changed and *moved* when its
parent changed (a node can be both). A removed node follows the mapping file when it names a target:
the kind is ``split`` (several targets), ``merged`` (the target existed before, or several old nodes
share it), ``renamed`` (1:1 to a new node under the same parent) or ``moved`` (1:1 elsewhere). In a
path-only taxonomy the id is a hash of the path, so a rename or a move changes the id: the mapping file
is what tells a rename from a removal there.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ._mapping import TaxonomyMapping
from ._tree import Taxonomy

__all__ = ["TaxonomyDiff", "diff_taxonomies"]


@dataclass(frozen=True)
class TaxonomyDiff:
    """The difference OLD -> NEW by node id (lists in source order). Build it with :func:`diff_taxonomies`."""

    old: Taxonomy
    new: Taxonomy
    added: list[str]
    removed: list[str]
    renamed: list[str]
    moved: list[str]
    mapped: dict[str, str]
    split: dict[str, list[str]] = field(default_factory=dict)
    mapped_kinds: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    path_changed: list[str] = field(default_factory=list)
    mapping_file: str | None = None

    @property
    def changed(self) -> bool:
        """Whether anything at all differs (ids, names or parents)."""
        return self.old.version != self.new.version

    def target(self, old_id: str) -> str | None:
        """Where ``old_id`` goes in NEW: itself if kept, the mapped node if removed and mapped, else
        ``None``."""
        if old_id in self.new:
            return old_id
        return self.mapped.get(old_id)

    def kind(self, old_id: str) -> str:
        """How an old node reached NEW: ``same``, ``renamed``, ``moved``, ``renamed+moved``, ``path_changed``
        (an ancestor was renamed or moved), a mapped kind (``renamed``/``moved``/``merged``/``split``) or
        ``removed`` (no target)."""
        if old_id in self.new:
            tags = [k for k, ids in (("renamed", self._renamed), ("moved", self._moved)) if old_id in ids]
            if tags:
                return "+".join(tags)
            return "path_changed" if old_id in self._path_changed else "same"
        return self.mapped_kinds.get(old_id, "removed")

    @property
    def _renamed(self) -> frozenset[str]:
        return frozenset(self.renamed)

    @property
    def _moved(self) -> frozenset[str]:
        return frozenset(self.moved)

    @property
    def _path_changed(self) -> frozenset[str]:
        return frozenset(self.path_changed)

    def counts(self) -> dict[str, int]:
        """Counts per kind (the figures a person reads first)."""
        kinds = Counter(self.mapped_kinds.values())
        return {
            "old_nodes": len(self.old),
            "new_nodes": len(self.new),
            "added": len(self.added),
            "removed": len(self.removed),
            "renamed": len(self.renamed),
            "moved": len(self.moved),
            "path_changed": len(self.path_changed),
            "mapped": len(self.mapped),
            "mapped_renamed": kinds.get("renamed", 0),
            "mapped_moved": kinds.get("moved", 0),
            "merged": kinds.get("merged", 0),
            "split": kinds.get("split", 0),
            "removed_without_target": len(self.unmapped),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``shelfwise taxonomy diff --out`` writes."""
        return {
            "old": {"source": self.old.source, "version": self.old.version, "nodes": len(self.old)},
            "new": {"source": self.new.source, "version": self.new.version, "nodes": len(self.new)},
            "mapping": self.mapping_file,
            "counts": self.counts(),
            "added": self.added,
            "removed": self.removed,
            "renamed": self.renamed,
            "moved": self.moved,
            "mapped": self.mapped,
            "split": self.split,
            "mapped_kinds": self.mapped_kinds,
            "removed_without_target": self.unmapped,
            "paths": self._paths(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def _paths(self) -> dict[str, dict[str, str]]:
        """Old and new paths of every id named in the lists (so a reader needs neither file)."""
        old_ids = {*self.removed, *self.renamed, *self.moved}
        new_ids = {*self.added, *self.renamed, *self.moved, *self.mapped.values()}
        return {
            "old": {i: self.old.get(i).path for i in sorted(old_ids)},
            "new": {i: self.new.get(i).path for i in sorted(new_ids)},
        }

    def to_html(self) -> str:
        """A self-contained HTML page: the counts, then one table per kind (old path -> new path)."""
        e = html.escape
        rows = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in self.counts().items())
        sections = [
            ("Renamed (same id)", [(i, self.old.get(i).path, self.new.get(i).path) for i in self.renamed]),
            (
                "Moved (same id, new parent)",
                [(i, self.old.get(i).path, self.new.get(i).path) for i in self.moved],
            ),
            (
                "Removed, mapped",
                [
                    (
                        i,
                        self.old.get(i).path,
                        f"{self.mapped_kinds[i]}: "
                        + " | ".join(self.new.get(t).path for t in self.split.get(i, [t])),
                    )
                    for i, t in self.mapped.items()
                ],
            ),
            ("Removed without a target", [(i, self.old.get(i).path, "") for i in self.unmapped]),
            ("Added", [(i, "", self.new.get(i).path) for i in self.added]),
        ]
        body = []
        for title, items in sections:
            body.append(f"<h2>{e(title)} ({len(items)})</h2>")
            if items:
                body.append("<table><tr><th>id</th><th>old path</th><th>new path</th></tr>")
                body += [f"<tr><td>{e(i)}</td><td>{e(a)}</td><td>{e(b)}</td></tr>" for i, a, b in items]
                body.append("</table>")
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Taxonomy diff</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
            f"<h1>Taxonomy diff</h1><p>{e(self.old.source)} ({e(self.old.version)}, "
            f"{len(self.old)} nodes) &rarr; "
            f"{e(self.new.source)} ({e(self.new.version)}, {len(self.new)} nodes)"
            + (f"; mapping {e(self.mapping_file)}" if self.mapping_file else "")
            + f"</p><table><tr><th>kind</th><th>nodes</th></tr>{rows}</table>"
            + "".join(body)
            + "</body></html>"
        )


def diff_taxonomies(old: Taxonomy, new: Taxonomy, *, mapping: TaxonomyMapping | None = None) -> TaxonomyDiff:
    """Compare two taxonomies by node id; ``mapping`` (OLD -> NEW) gives removed nodes their targets."""
    new_ids = set(new.ids)
    old_ids = set(old.ids)
    added = [i for i in new.ids if i not in old_ids]
    removed = [i for i in old.ids if i not in new_ids]
    renamed: list[str] = []
    moved: list[str] = []
    path_changed: list[str] = []
    for node in old:
        if node.id not in new_ids:
            continue
        now = new.get(node.id)
        if now.name != node.name:
            renamed.append(node.id)
        if now.parent_id != node.parent_id:
            moved.append(node.id)
        if now.path != node.path and now.name == node.name and now.parent_id == node.parent_id:
            path_changed.append(node.id)
    mapped: dict[str, str] = {}
    split: dict[str, list[str]] = {}
    if mapping is not None:
        for i in removed:
            targets = mapping.targets.get(i)
            if targets:
                mapped[i] = targets[0]
                if len(targets) > 1:
                    split[i] = list(targets)
    shared = Counter(mapped.values())
    kinds: dict[str, str] = {}
    for i, t in mapped.items():
        if i in split:
            kinds[i] = "split"
        elif t in old_ids or shared[t] > 1:
            kinds[i] = "merged"
        else:
            parent = old.get(i).parent_id
            parent_now = None if parent is None else (parent if parent in new_ids else mapped.get(parent))
            kinds[i] = "renamed" if parent_now == new.get(t).parent_id else "moved"
    unmapped = [i for i in removed if i not in mapped]
    return TaxonomyDiff(
        old=old,
        new=new,
        added=added,
        removed=removed,
        renamed=renamed,
        moved=moved,
        mapped=mapped,
        split=split,
        mapped_kinds=kinds,
        unmapped=unmapped,
        path_changed=path_changed,
        mapping_file=mapping.file if mapping is not None else None,
    )
