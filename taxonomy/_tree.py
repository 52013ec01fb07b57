"""The immutable category tree: :class:`Taxonomy` and ``assemble``, which validates and builds one (internal).

The checks that turn raw nodes into nodes live in ``_build``; the nodes themselves in ``_node``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shelfwise.errors import TaxonomyError

from ._build import add_path_nodes, validated_nodes
from ._errors import Problem, UnknownNodeError
from ._node import Node, RawNode
from ._text import fold, join_path, normalise_path, split_path

if TYPE_CHECKING:
    import polars as pl


def fingerprint(pairs: Iterable[tuple[str, str]]) -> str:
    """``"sha256:"`` + 16 hex of the sha256 of the sorted ``(id, path)`` pairs."""
    digest = hashlib.sha256()
    for node_id, path in sorted(pairs):
        digest.update(node_id.encode("utf-8"))
        digest.update(b"\t")
        digest.update(path.encode("utf-8"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()[:16]


class Taxonomy:
    """An immutable category tree, loaded once and shared by every stage.

    Iteration yields :class:`Node` objects in source order. Ids are strings. ``version`` is a content
    hash of the sorted (id, path) pairs, so it changes when any id, name or parent changes and stays the
    same across loads of the same file (localized names added with :meth:`with_names` do not change it).
    Lookups of unknown ids or paths raise :class:`UnknownNodeError` (a ``KeyError`` and a
    ``TaxonomyError``); the ``find_*`` methods return ``None`` instead.
    """

    __slots__ = (
        "_by_fold",
        "_by_path",
        "_children",
        "_loc_fold",
        "_localized",
        "_nodes",
        "_roots",
        "_version",
        "format",
        "lang",
        "source",
        "warnings",
    )

    _nodes: dict[str, Node]
    _children: dict[str, tuple[str, ...]]
    _roots: tuple[str, ...]
    _by_path: dict[str, str]
    _by_fold: dict[str, str]
    _localized: dict[str, dict[str, tuple[str, str]]]
    _loc_fold: dict[str, str]
    _version: str
    source: str
    format: str | None
    lang: str | None
    warnings: tuple[str, ...]

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        source: str = "<memory>",
        format: str | None = None,
        lang: str | None = None,
        warnings: Iterable[str] = (),
        localized: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
    ) -> None:
        """Wrap already consistent nodes. Prefer :func:`load_taxonomy`, :meth:`from_paths` or
        :meth:`from_records`, which validate their input and compute paths, depths and leaves."""
        set_ = object.__setattr__
        node_map: dict[str, Node] = {}
        children: dict[str, list[str]] = {}
        roots: list[str] = []
        by_path: dict[str, str] = {}
        by_fold: dict[str, str] = {}
        for node in nodes:
            node_map[node.id] = node
            if node.parent_id is None:
                roots.append(node.id)
            else:
                children.setdefault(node.parent_id, []).append(node.id)
            by_path.setdefault(node.path, node.id)
            by_fold.setdefault(fold(node.path), node.id)
        set_(self, "_nodes", node_map)
        set_(self, "_children", {k: tuple(v) for k, v in children.items()})
        set_(self, "_roots", tuple(roots))
        set_(self, "_by_path", by_path)
        set_(self, "_by_fold", by_fold)
        loc = {lang_: dict(m) for lang_, m in (localized or {}).items()}
        loc_fold: dict[str, str] = {}
        for mapping in loc.values():
            for node_id, (_name, loc_path) in mapping.items():
                loc_fold.setdefault(fold(loc_path), node_id)
        set_(self, "_localized", loc)
        set_(self, "_loc_fold", loc_fold)
        set_(self, "_version", fingerprint((n.id, n.path) for n in node_map.values()))
        set_(self, "source", source)
        set_(self, "format", format)
        set_(self, "lang", lang)
        set_(self, "warnings", tuple(warnings))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Taxonomy is immutable (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Taxonomy is immutable (tried to delete {name!r})")

    def __reduce__(self) -> tuple[Any, ...]:  # pickling for Prefect/Dask workers
        return (
            _rebuild,
            (list(self._nodes.values()), self.source, self.format, self.lang, self.warnings, self._localized),
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_paths(
        cls, paths: Iterable[str], *, source: str = "<paths>", lang: str | None = None
    ) -> Taxonomy:
        """Build a path-only taxonomy (ids from :func:`path_id`); missing ancestors are created."""
        raws: list[RawNode] = []
        problems: list[Problem] = []
        seen: set[str] = set()
        for i, path in enumerate(paths, start=1):
            add_path_nodes(raws, seen, problems, path, where=f"item {i}")
        return assemble(raws, source=source, fmt="paths", lang=lang, problems=problems)

    @classmethod
    def from_records(
        cls,
        records: Iterable[tuple[str, str, str | None]],
        *,
        source: str = "<records>",
        lang: str | None = None,
    ) -> Taxonomy:
        """Build from ``(id, name, parent_id)`` triples in any order; validates ids, parents, cycles and
        names."""
        raws = [
            RawNode(str(node_id), name, None if parent is None else str(parent), f"record {i}")
            for i, (node_id, name, parent) in enumerate(records, start=1)
        ]
        return assemble(raws, source=source, fmt="records", lang=lang)

    # ------------------------------------------------------------------ basics
    @property
    def version(self) -> str:
        """``"sha256:<16 hex>"`` content hash of the sorted (id, path) pairs."""
        return self._version

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __contains__(self, node_id: object) -> bool:
        if isinstance(node_id, Node):
            node_id = node_id.id
        return node_id in self._nodes

    def __repr__(self) -> str:
        return f"Taxonomy(source={self.source!r}, nodes={len(self)}, version={self.version!r})"

    @property
    def ids(self) -> list[str]:
        """All ids in source order."""
        return list(self._nodes)

    @property
    def max_depth(self) -> int:
        return max((n.depth for n in self._nodes.values()), default=0)

    # ------------------------------------------------------------------ lookups
    def get(self, node_id: str) -> Node:
        """The node with this id; raises :class:`UnknownNodeError` (a ``KeyError``) naming the id."""
        try:
            return self._nodes[node_id]
        except KeyError:
            raise UnknownNodeError(
                f"category id {node_id!r} is not in taxonomy {self.source} ({len(self)} nodes, "
                f"version {self.version}); fix: use an id from this taxonomy or retrain against it"
            ) from None

    def by_path(self, path: str) -> Node:
        """The node with exactly this path (whitespace around ``>`` ignored).

        Raises :class:`UnknownNodeError` when there is none.

        When a file lists the same path under two ids (translation collisions), the first one wins.
        """
        node_id = self._by_path.get(path)
        if node_id is None:
            node_id = self._by_path.get(normalise_path(path))
        if node_id is None:
            raise UnknownNodeError(
                f"category path {path!r} is not in taxonomy {self.source}; fix: check the spelling "
                f"(use find_path() for a case-insensitive lookup, deepest_known() to cut extra trailing "
                f"levels)"
            )
        return self._nodes[node_id]

    def find_path(self, path: str) -> Node | None:
        """The node for ``path``, or ``None``: tolerant to whitespace, ``>``/``>>`` separators, a
        Flipkart ``["..."]`` wrapper and letter case; also matches localized paths (see
        :meth:`with_names`)."""
        node_id = self._by_path.get(path)
        if node_id is not None:
            return self._nodes[node_id]
        segments = split_path(path)
        if not segments:
            return None
        return self._find_segments(segments)

    def _find_segments(self, segments: list[str]) -> Node | None:
        canonical = join_path(segments)
        node_id = self._by_path.get(canonical)
        if node_id is None:
            node_id = self._by_fold.get(fold(canonical))
        if node_id is None and self._localized:
            node_id = self._localized_lookup(fold(canonical))
        return None if node_id is None else self._nodes[node_id]

    def _localized_lookup(self, folded: str) -> str | None:
        return self._loc_fold.get(folded)

    def deepest_known(self, path: str) -> Node | None:
        """The deepest node whose path is a prefix of ``path`` (``" > "`` or ``" >> "`` separated).

        Used to cut product-specific trailing levels off shop category trees, e.g. Flipkart's
        ``["Watches >> Wrist Watches >> Camerii Wrist Watches"]`` -> ``Watches > Wrist Watches``.
        Returns ``None`` when not even the first level is known.
        """
        segments = split_path(path)
        for end in range(len(segments), 0, -1):
            node = self._find_segments(segments[:end])
            if node is not None:
                return node
        return None

    # ------------------------------------------------------------------ structure
    def parent(self, node_id: str) -> Node | None:
        node = self.get(node_id)
        return None if node.parent_id is None else self._nodes[node.parent_id]

    def ancestors(self, node_id: str, *, include_self: bool = False) -> list[Node]:
        """Ancestors root first (the node itself last only with ``include_self=True``)."""
        node = self.get(node_id)
        chain = [node] if include_self else []
        while node.parent_id is not None:
            node = self._nodes[node.parent_id]
            chain.append(node)
        chain.reverse()
        return chain

    def ancestor_at(self, node_id: str, depth: int) -> Node:
        """The ancestor of ``node_id`` at ``depth`` (1 = top level); the node itself if it is shallower."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        node = self.get(node_id)
        while node.depth > depth and node.parent_id is not None:
            node = self._nodes[node.parent_id]
        return node

    def children(self, node_id: str | None = None) -> list[Node]:
        """Direct children in source order; ``children(None)`` returns the roots."""
        if node_id is None:
            return self.roots()
        self.get(node_id)
        return [self._nodes[c] for c in self._children.get(node_id, ())]

    def roots(self) -> list[Node]:
        return [self._nodes[r] for r in self._roots]

    def leaves(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.is_leaf]

    def descendants(self, node_id: str) -> list[Node]:
        """All nodes below ``node_id`` (not itself), depth-first in source order."""
        self.get(node_id)
        out: list[Node] = []
        stack = list(reversed(self._children.get(node_id, ())))
        while stack:
            current = stack.pop()
            out.append(self._nodes[current])
            stack.extend(reversed(self._children.get(current, ())))
        return out

    def to_frame(self) -> pl.DataFrame:
        """A polars frame with columns id, name, parent_id, path, depth, is_leaf (source order)."""
        import polars as pl

        nodes = list(self._nodes.values())
        return pl.DataFrame(
            {
                "id": [n.id for n in nodes],
                "name": [n.name for n in nodes],
                "parent_id": [n.parent_id for n in nodes],
                "path": [n.path for n in nodes],
                "depth": [n.depth for n in nodes],
                "is_leaf": [n.is_leaf for n in nodes],
            },
            schema={
                "id": pl.String,
                "name": pl.String,
                "parent_id": pl.String,
                "path": pl.String,
                "depth": pl.Int32,
                "is_leaf": pl.Boolean,
            },
        )

    # ------------------------------------------------------------------ localized names
    def with_names(self, other: Taxonomy, *, lang: str | None = None) -> Taxonomy:
        """A copy that also knows ``other``'s names and paths for the ids both share, under ``lang``.

        Meant for localized files with the same ids (Shopify's ``categories.ko.txt`` next to ``.en.txt``).
        ``lang`` defaults to ``other.lang`` (taken from the file name). ``version`` is unchanged. Raises
        :class:`TaxonomyError` if the two share no ids or no language is known.
        """
        lang = lang or other.lang
        if not lang:
            raise TaxonomyError(
                f"taxonomy {other.source}: language unknown; fix: pass lang='ko' (or the right code) to "
                f"with_names(), or name the file like 'categories.ko.txt'"
            )
        shared = {n.id: (n.name, n.path) for n in other if n.id in self._nodes}
        if not shared:
            raise TaxonomyError(
                f"taxonomy {other.source} shares no ids with {self.source}; fix: pass the localized "
                f"version of the same taxonomy (same ids), not a different one"
            )
        localized = {k: dict(v) for k, v in self._localized.items()}
        localized[lang] = shared
        return Taxonomy(
            self._nodes.values(),
            source=self.source,
            format=self.format,
            lang=self.lang,
            warnings=self.warnings,
            localized=localized,
        )

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages added with :meth:`with_names` (not including ``lang``)."""
        return tuple(self._localized)

    def localized_names(self, lang: str) -> dict[str, str]:
        """``{id: name}`` in ``lang`` for the ids that have a translation (own names if
        ``lang == self.lang``)."""
        if lang == self.lang and lang not in self._localized:
            return {n.id: n.name for n in self}
        return {k: name for k, (name, _path) in self._get_lang(lang).items()}

    def localized_paths(self, lang: str) -> dict[str, str]:
        """``{id: full path}`` in ``lang`` for the ids that have a translation."""
        if lang == self.lang and lang not in self._localized:
            return {n.id: n.path for n in self}
        return {k: path for k, (_name, path) in self._get_lang(lang).items()}

    def name_in(self, node_id: str, lang: str) -> str:
        """The node's name in ``lang``, falling back to its own name when there is no translation."""
        node = self.get(node_id)
        entry = self._localized.get(lang, {}).get(node_id)
        return node.name if entry is None else entry[0]

    def _get_lang(self, lang: str) -> dict[str, tuple[str, str]]:
        try:
            return self._localized[lang]
        except KeyError:
            known = sorted({*self._localized, *([self.lang] if self.lang else [])})
            raise TaxonomyError(
                f"taxonomy {self.source} has no names in language {lang!r} (known: {known}); fix: "
                f"add them with taxonomy.with_names(load_taxonomy('<file>.{lang}.txt'))"
            ) from None


def _rebuild(
    nodes: list[Node],
    source: str,
    fmt: str | None,
    lang: str | None,
    warnings: tuple[str, ...],
    localized: dict[str, dict[str, tuple[str, str]]],
) -> Taxonomy:
    return Taxonomy(nodes, source=source, format=fmt, lang=lang, warnings=warnings, localized=localized)


def assemble(
    raws: list[RawNode],
    *,
    source: str,
    fmt: str | None,
    lang: str | None,
    problems: list[Problem] | None = None,
    warnings: list[str] | None = None,
) -> Taxonomy:
    """Validate raw nodes (duplicate ids, empty names, unknown parents, cycles) and build the tree.

    Problems found by the caller are reported together with these, the first 20 in the message.
    """
    warnings = list(warnings or [])
    nodes = validated_nodes(raws, source=source, problems=list(problems or []), warnings=warnings)
    return Taxonomy(nodes, source=source, format=fmt, lang=lang, warnings=warnings)
