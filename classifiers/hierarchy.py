"""Tree-consistent scores and hierarchical back-off.

A model scores *label nodes* (the taxonomy nodes seen as labels, which may be internal nodes when a shop
labels some products only down to a parent). `NodeIndex` holds the part of the taxonomy the model needs
(label nodes, their ancestors and zero-shot candidates) so a saved model predicts without the taxonomy
file. `aggregate` sums label probabilities into every ancestor, so a parent's score is always >= the
best child's, and `backoff` walks from the best label up to the deepest node that clears a threshold.

    >>> index = NodeIndex.from_taxonomy(taxonomy, ["a>b", "a>c"])
    >>> node_scores = index.aggregate(label_probs)            # (n, n_nodes)
    >>> chosen, backed_off = index.backoff(node_scores, label_probs.argmax(1), thresholds=0.9)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

__all__ = ["NodeIndex", "tree_consistent"]


@dataclass
class NodeIndex:
    """Compact tree over the nodes a model needs: ids, paths, parents and depths, aligned by position."""

    ids: list[str]
    paths: list[str]
    parents: list[int]  # position of the parent, -1 for a top-level node
    depths: list[int]
    _pos: dict[str, int] = field(default_factory=dict, repr=False)
    _up: sparse.csr_matrix | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._pos = {node_id: i for i, node_id in enumerate(self.ids)}
        self._up = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_taxonomy(cls, taxonomy: Any, node_ids: Iterable[str]) -> NodeIndex:
        """The given nodes plus all their ancestors (root first order is not required)."""
        ids: list[str] = []
        seen: set[str] = set()
        for node_id in node_ids:
            for node in taxonomy.ancestors(node_id, include_self=True):
                if node.id not in seen:
                    seen.add(node.id)
                    ids.append(node.id)
        nodes = [taxonomy.get(i) for i in ids]
        pos = {n.id: i for i, n in enumerate(nodes)}
        return cls(
            ids=[n.id for n in nodes],
            paths=[n.path for n in nodes],
            parents=[pos[n.parent_id] if n.parent_id is not None else -1 for n in nodes],
            depths=[int(n.depth) for n in nodes],
        )

    def to_state(self) -> dict[str, list[Any]]:
        return {"ids": self.ids, "paths": self.paths, "parents": self.parents, "depths": self.depths}

    @classmethod
    def from_state(cls, state: dict[str, list[Any]]) -> NodeIndex:
        return cls(
            ids=list(state["ids"]),
            paths=list(state["paths"]),
            parents=list(state["parents"]),
            depths=list(state["depths"]),
        )

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._pos

    def position(self, node_ids: Sequence[str]) -> np.ndarray:
        """Positions of ``node_ids`` (KeyError for an id outside the index)."""
        return np.array([self._pos[i] for i in node_ids], dtype=np.int64)

    def ancestor_positions(self, pos: int, *, include_self: bool = True) -> list[int]:
        """Positions from the node up to its top-level ancestor (node first)."""
        chain = [pos] if include_self else []
        p = self.parents[pos]
        while p >= 0:
            chain.append(p)
            p = self.parents[p]
        return chain

    def is_ancestor_or_self(self, ancestor: str, node: str) -> bool:
        """True when ``ancestor`` is ``node`` or one of its ancestors."""
        if ancestor not in self._pos or node not in self._pos:
            return False
        return self._pos[ancestor] in self.ancestor_positions(self._pos[node])

    @property
    def up_matrix(self) -> sparse.csr_matrix:
        """(n_nodes, n_nodes) 0/1 matrix M with M[i, j] = 1 when j is i or an ancestor of i."""
        if self._up is None:
            rows: list[int] = []
            cols: list[int] = []
            for i in range(len(self.ids)):
                for j in self.ancestor_positions(i):
                    rows.append(i)
                    cols.append(j)
            n = len(self.ids)
            self._up = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        return self._up

    # ------------------------------------------------------------------ scores
    def aggregate(self, label_scores: np.ndarray, label_positions: np.ndarray) -> np.ndarray:
        """Node scores (n, n_nodes): each label's probability added to itself and every ancestor."""
        n = label_scores.shape[0]
        full = np.zeros((n, len(self.ids)), dtype=np.float64)
        full[:, label_positions] = label_scores
        return self.aggregate_full(full)

    def aggregate_full(self, full: np.ndarray) -> np.ndarray:
        """Like `aggregate` for scores already placed at node positions (n, n_nodes)."""
        out = np.asarray((self.up_matrix.T @ np.asarray(full, dtype=np.float64).T).T)
        return np.asarray(np.clip(out, 0.0, 1.0))

    def backoff(
        self, node_scores: np.ndarray, best: np.ndarray, thresholds: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the deepest node on the path of ``best`` (a node position) with score >= threshold.

        ``thresholds`` is a scalar or an array over node positions. When neither the node nor any
        ancestor clears its threshold, the best node itself is kept (``backed_off`` False): the
        item is then uncertain at every level and goes to review anyway.
        """
        n = node_scores.shape[0]
        thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(self.ids),))
        chosen = np.asarray(best, dtype=np.int64).copy()
        backed = np.zeros(n, dtype=bool)
        for r in range(n):
            b = int(best[r])
            if node_scores[r, b] >= thr[b]:
                continue
            for p in self.ancestor_positions(b, include_self=False):
                if node_scores[r, p] >= thr[p]:
                    chosen[r] = p
                    backed[r] = True
                    break
        return chosen, backed


def tree_consistent(node_scores: np.ndarray, parents: Sequence[int], *, atol: float = 1e-9) -> bool:
    """True when every node's score is >= each child's score (row-wise) and all scores lie in [0, 1]."""
    scores = np.asarray(node_scores, dtype=np.float64)
    if scores.size and (scores.min() < -atol or scores.max() > 1 + atol):
        return False
    for child, parent in enumerate(parents):
        if parent >= 0 and np.any(scores[:, parent] + atol < scores[:, child]):
            return False
    return True
