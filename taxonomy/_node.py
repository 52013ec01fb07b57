"""A category node, before (:class:`RawNode`) and after (:class:`Node`) validation (internal)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    """One category. ``path`` is the full path joined by ``" > "``; ``depth`` 1 is the top level."""

    id: str
    name: str
    parent_id: str | None
    path: str
    depth: int
    is_leaf: bool


@dataclass(slots=True)
class RawNode:
    """A node as read from a file, before validation. ``where`` locates it (``"line 12"``)."""

    id: str
    name: str
    parent_id: str | None
    where: str
    path: str | None = None
