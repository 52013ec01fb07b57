"""Building the tree: path-only entries into raw nodes, and the checks that turn raw nodes into nodes."""

from __future__ import annotations

from shelfwise.errors import TaxonomyError

from ._errors import Problem, TaxonomyValidationError
from ._node import Node, RawNode
from ._text import join_path, path_id, split_path


def add_path_nodes(
    raws: list[RawNode],
    seen: set[str],
    problems: list[Problem],
    path: str,
    *,
    where: str,
    name: str | None = None,
) -> str | None:
    """Append the nodes of a path-only entry (and its missing ancestors) to ``raws``; returns its id."""
    segments = split_path(path)
    if not segments:
        problems.append(Problem(where, "empty category path", "delete the line or write a path"))
        return None
    if any(not seg for seg in segments):
        problems.append(
            Problem(
                where,
                f"empty name in path {path.strip()!r} (level {segments.index('') + 1})",
                "remove the doubled '>' or write the missing name",
            )
        )
        return None
    parent: str | None = None
    node_id = ""
    for depth in range(1, len(segments) + 1):
        sub = join_path(segments[:depth])
        node_id = path_id(sub)
        if node_id not in seen:
            seen.add(node_id)
            leaf_name = name if (name and depth == len(segments)) else segments[depth - 1]
            raws.append(RawNode(node_id, leaf_name, parent, where, sub))
        parent = node_id
    return node_id


def validated_nodes(
    raws: list[RawNode], *, source: str, problems: list[Problem], warnings: list[str]
) -> list[Node]:
    """Check raw nodes (duplicate ids, empty names, unknown parents, cycles) and return the tree's nodes.

    Problems found by the caller are reported together with these, the first 20 in the message; a
    warning is appended to ``warnings`` for paths listed under two ids.
    """
    unique, own_problems = unique_nodes(raws)
    problems = [*problems, *own_problems, *orphans(unique), *cycles(unique)]
    if not unique and not problems:
        raise TaxonomyError(
            f"taxonomy {source} is empty (no category lines); fix: point to a file with one category per "
            f"line (see TaxonomyFormat for the accepted layouts)"
        )
    if problems:
        raise TaxonomyValidationError(source, problems)
    nodes = resolved_nodes(unique)
    duplicate_paths = duplicate_paths_warning(nodes)
    if duplicate_paths is not None:
        warnings.append(duplicate_paths)
    return nodes


def unique_nodes(raws: list[RawNode]) -> tuple[dict[str, RawNode], list[Problem]]:
    """The raw nodes by id (the first of each id), and the empty ids, duplicate ids and empty names."""
    problems: list[Problem] = []
    first_where: dict[str, str] = {}
    unique: dict[str, RawNode] = {}
    for raw in raws:
        if not raw.id:
            problems.append(Problem(raw.where, "empty category id", "write the id of this category"))
            continue
        if raw.id in first_where:
            first = unique.get(raw.id)
            both = ""
            if raw.path is not None and first is not None and first.path is not None:
                both = f" for {raw.path!r}; it is also {first.path!r}"
            problems.append(
                Problem(
                    raw.where,
                    f"duplicate id {raw.id!r}{both} (first used on {first_where[raw.id]})",
                    "give each category its own id or delete one of the two lines",
                )
            )
            continue
        first_where[raw.id] = raw.where
        if not raw.name or not raw.name.strip():
            problems.append(
                Problem(raw.where, f"category {raw.id!r} has an empty name", "write the category's name")
            )
        unique[raw.id] = raw
    return unique, problems


def orphans(unique: dict[str, RawNode]) -> list[Problem]:
    """One problem per node whose parent id is not among the nodes."""
    return [
        Problem(
            raw.where,
            f"category {raw.id!r} names parent {raw.parent_id!r}, which is not in the file (orphan)",
            "add the parent category or correct the parent id",
        )
        for raw in unique.values()
        if raw.parent_id is not None and raw.parent_id not in unique
    ]


def resolved_nodes(unique: dict[str, RawNode]) -> list[Node]:
    """The validated nodes (no orphans, no cycles) with their paths, depths and leaf flags."""
    has_children = {r.parent_id for r in unique.values() if r.parent_id is not None}
    depth: dict[str, int] = {}
    paths: dict[str, str] = {}

    def resolve(node_id: str) -> None:
        chain = []
        current: str | None = node_id
        while current is not None and current not in depth:
            chain.append(current)
            current = unique[current].parent_id
        base_depth = 0 if current is None else depth[current]
        base_path = None if current is None else paths[current]
        for item in reversed(chain):
            base_depth += 1
            raw = unique[item]
            own = (
                raw.path
                if raw.path is not None
                else (raw.name.strip() if base_path is None else base_path + " > " + raw.name.strip())
            )
            depth[item] = base_depth
            paths[item] = own
            base_path = own

    nodes = []
    for raw in unique.values():
        resolve(raw.id)
        nodes.append(
            Node(
                id=raw.id,
                name=raw.name.strip(),
                parent_id=raw.parent_id,
                path=paths[raw.id],
                depth=depth[raw.id],
                is_leaf=raw.id not in has_children,
            )
        )
    return nodes


def duplicate_paths_warning(nodes: list[Node]) -> str | None:
    """A warning naming the paths listed under two ids (the first five); ``None`` when there are none."""
    seen_paths: dict[str, str] = {}
    dup_paths = []
    for node in nodes:
        if node.path in seen_paths:
            dup_paths.append(f"{node.path!r} ({seen_paths[node.path]}, {node.id})")
        else:
            seen_paths[node.path] = node.id
    if not dup_paths:
        return None
    return (
        f"{len(dup_paths)} paths are listed under two ids; by_path() returns the first: "
        + "; ".join(dup_paths[:5])
        + (" ..." if len(dup_paths) > 5 else "")
    )


def cycles(unique: dict[str, RawNode]) -> list[Problem]:
    """One problem per parent cycle, naming every id on it."""
    state: dict[str, int] = {}  # 1 = on current walk, 2 = done
    found: list[Problem] = []
    for start in unique:
        if start in state:
            continue
        walk: list[str] = []
        current: str | None = start
        while current is not None and current in unique and current not in state:
            state[current] = 1
            walk.append(current)
            current = unique[current].parent_id
        if current is not None and state.get(current) == 1:
            cycle = walk[walk.index(current) :]
            found.append(
                Problem(
                    unique[cycle[0]].where,
                    "parent cycle "
                    + " -> ".join(repr(c) for c in [*cycle, cycle[0]])
                    + " ("
                    + ", ".join(unique[c].where for c in cycle)
                    + ")",
                    "make one of these categories a top-level category or give it its real parent",
                )
            )
        for item in walk:
            state[item] = 2
    return found
