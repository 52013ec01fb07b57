"""The taxonomy side of the review app: one tree plus a search index, built once at start-up (internal)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

from shelfwise.errors import ConfigError
from taxonomy import Node, Taxonomy, TaxonomyIndex, load_taxonomy

__all__ = ["SearchResult", "TaxonomyService", "load_service"]


@dataclass(frozen=True)
class SearchResult:
    """One taxonomy search hit as the API returns it."""

    id: str
    path: str
    localized_path: str | None
    score: float


class TaxonomyService:
    """The main taxonomy, its search index over every language given, and localized paths per node id."""

    def __init__(self, taxonomy: Taxonomy, extras: list[Taxonomy]) -> None:
        self.taxonomy = taxonomy
        self.index = TaxonomyIndex(taxonomy, extra_names=extras)
        # First extra taxonomy that knows an id gives its localized path (e.g. Korean Shopify names).
        localized: dict[str, str] = {}
        for extra in extras:
            for node in extra:
                if (
                    node.id in taxonomy
                    and node.id not in localized
                    and node.path != taxonomy.get(node.id).path
                ):
                    localized[node.id] = node.path
        self._localized = localized

    def get(self, node_id: str) -> Node | None:
        """The node with this id, or ``None`` when the taxonomy has no such id."""
        return self.taxonomy.get(node_id) if node_id in self.taxonomy else None

    def find_path(self, path: str | None) -> Node | None:
        return self.taxonomy.find_path(path) if path else None

    def localized_path(self, node_id: str) -> str | None:
        return self._localized.get(node_id)

    def search(self, query: str, *, limit: int = 20) -> tuple[list[SearchResult], float]:
        """Best matches for ``query`` and the time the search took in milliseconds."""
        started = time.perf_counter()
        hits = self.index.search(query, limit=limit)
        results = [
            SearchResult(id=node.id, path=node.path, localized_path=self._localized.get(node.id), score=score)
            for node, score in hits
        ]
        return results, (time.perf_counter() - started) * 1000.0


def _file_key(path: str) -> tuple[str, int, int]:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(
            f"review app: taxonomy file {path} does not exist (resolved to {resolved}); pass the path of a "
            "taxonomy file, e.g. shopify_categories_2025-01.en.txt, and its localized twin as an extra "
            "taxonomy"
        )
    stat = resolved.stat()
    return (str(resolved), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_service(main: tuple[str, int, int], extras: tuple[tuple[str, int, int], ...]) -> TaxonomyService:
    return TaxonomyService(load_taxonomy(main[0]), [load_taxonomy(key[0]) for key in extras])


def load_service(taxonomy_path: str, extra_paths: list[str]) -> TaxonomyService:
    """Load the taxonomy files and build the index (about 2 s for Shopify en+ko).

    Apps built in one process from the same unchanged files share one service (the key includes each
    file's modification time and size, so an edited file is loaded anew).
    """
    return _cached_service(_file_key(taxonomy_path), tuple(_file_key(p) for p in extra_paths))
