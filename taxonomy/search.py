"""Fast category search over names and full paths, in every language the taxonomy knows.

    index = TaxonomyIndex(load_taxonomy(EN).with_names(load_taxonomy(KO)))
    for node, score in index.search("backpack"): ...
    index.search("반려동물")       # Korean names and paths, Hangul substrings inside compounds too

Ranking (a higher tier always wins; inside a tier shallower, then leaf, then shorter names first):
exact name (also ignoring spaces and punctuation) or full path (1.0) > name starts with the query
(0.85) > every query word starts a word of the name (0.7) > the query is inside the name, ignoring
spaces and punctuation (0.6) > every query word starts a word of the full path (0.45) > the query is
inside the full path (0.3). The score is the tier
minus 0.01 per level below the top (at most 0.09), so scores are comparable across queries.

Matching is case-insensitive (NFKC + casefold). Pure Python: lowercase strings, compacted strings and an
inverted index of tokens are built once in the constructor (about a second for Shopify en+ko); a search
then takes a few milliseconds.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from ._errors import UnknownNodeError
from ._node import Node
from ._text import COMPACT_DROP_RE as _COMPACT_DROP
from ._text import TOKEN_RE as _TOKEN
from ._text import compact, fold, tokens
from ._tree import Taxonomy

__all__ = ["SearchHit", "TaxonomyIndex"]

EXACT, NAME_PREFIX, NAME_WORDS, NAME_SUBSTRING, PATH_WORDS, PATH_SUBSTRING = 1.0, 0.85, 0.7, 0.6, 0.45, 0.3


class SearchHit(NamedTuple):
    """One search result; unpacks as ``node, score``."""

    node: Node
    score: float


class _Field:
    """Folded strings of one kind (names or paths) with a token index for prefix lookups."""

    def __init__(self, *, compacted: bool) -> None:
        self.compacted = compacted  # also keep space/punctuation-free copies (names only)
        self.texts: list[str] = []  # folded
        self.compacts: list[str] = []
        self.owner: list[int] = []  # node index per text
        self.postings: dict[str, set[int]] = {}
        self.vocab: list[str] = []
        self.exact: dict[str, set[int]] = {}
        self.compact_exact: dict[str, set[int]] = {}
        self.sorted_texts: list[tuple[str, int]] = []
        self._blob: tuple[str, list[int]] = ("", [])
        self._cblob: tuple[str, list[int]] = ("", [])

    def add(self, text: str, node: int) -> None:
        folded = fold(text)
        if not folded:
            return
        self.texts.append(folded)
        self.owner.append(node)
        self.exact.setdefault(folded, set()).add(node)
        if self.compacted:
            squeezed = _COMPACT_DROP.sub("", folded)
            self.compacts.append(squeezed)
            self.compact_exact.setdefault(squeezed, set()).add(node)
        postings = self.postings
        for token in set(_TOKEN.findall(folded)):
            found = postings.get(token)
            if found is None:
                postings[token] = {node}
            else:
                found.add(node)

    def freeze(self) -> None:
        self.vocab = sorted(self.postings)
        self.sorted_texts = sorted(zip(self.texts, self.owner))
        # One newline-joined blob per variant: substring search runs in C (str.find), not a Python loop.
        for attr, items in (("_blob", self.texts), ("_cblob", self.compacts)):
            starts, pos = [], 0
            for item in items:
                starts.append(pos)
                pos += len(item) + 1
            setattr(self, attr, ("\n".join(items), starts))

    def token_prefix(self, prefix: str) -> set[int]:
        lo = bisect.bisect_left(self.vocab, prefix)
        hi = bisect.bisect_left(self.vocab, prefix + "\U0010ffff")
        if hi - lo == 1:
            return self.postings[self.vocab[lo]]
        out: set[int] = set()
        for token in self.vocab[lo:hi]:
            out |= self.postings[token]
        return out

    def all_token_prefixes(self, query_tokens: list[str]) -> set[int]:
        result: set[int] | None = None
        for token in sorted(set(query_tokens), key=len, reverse=True):  # longest (rarest) first
            found = self.token_prefix(token)
            result = set(found) if result is None else result & found
            if not result:
                return set()
        return result or set()

    def text_prefix(self, prefix: str) -> set[int]:
        lo = bisect.bisect_left(self.sorted_texts, (prefix, -1))
        out: set[int] = set()
        for text, node in self.sorted_texts[lo:]:
            if not text.startswith(prefix):
                break
            out.add(node)
        return out

    def substring(self, needle: str, *, compacted: bool) -> set[int]:
        blob, starts = self._cblob if compacted else self._blob
        owner, found = self.owner, set()
        pos = blob.find(needle)
        while pos >= 0:
            item = bisect.bisect_right(starts, pos) - 1
            found.add(owner[item])
            next_start = starts[item + 1] if item + 1 < len(starts) else len(blob)
            pos = blob.find(needle, next_start)
        return found


class TaxonomyIndex:
    """Search a taxonomy's categories by name and path (see the module docstring for the ranking).

    ``extra_names``: more names per node. ``None`` (default) uses the localized names already attached
    with :meth:`Taxonomy.with_names`; a list of taxonomies with the same ids (e.g. the Korean Shopify
    file) adds their names and paths; a mapping ``{id: name or [names]}`` adds synonyms (unknown ids
    raise :class:`UnknownNodeError`).
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        extra_names: Mapping[str, str | Iterable[str]] | Iterable[Taxonomy] | Taxonomy | None = None,
    ) -> None:
        self.taxonomy = taxonomy
        self._nodes: list[Node] = list(taxonomy)
        position = {node.id: i for i, node in enumerate(self._nodes)}
        self._names = _Field(compacted=True)
        self._paths = _Field(compacted=False)
        for i, node in enumerate(self._nodes):
            self._names.add(node.name, i)
            self._paths.add(node.path, i)
        for lang in taxonomy.languages:
            names, paths = taxonomy.localized_names(lang), taxonomy.localized_paths(lang)
            for node_id, name in names.items():
                self._names.add(name, position[node_id])
                self._paths.add(paths[node_id], position[node_id])
        if isinstance(extra_names, Taxonomy):
            extra_names = [extra_names]
        if isinstance(extra_names, Mapping):
            unknown = [k for k in extra_names if k not in position]
            if unknown:
                raise UnknownNodeError(
                    f"extra_names names {len(unknown)} ids not in taxonomy {taxonomy.source}: {unknown[:5]}; "
                    f"fix: use ids of this taxonomy"
                )
            for node_id, value in extra_names.items():
                for name in [value] if isinstance(value, str) else value:
                    self._names.add(name, position[node_id])
        elif extra_names is not None:
            for other in extra_names:
                for node in other:
                    if node.id in position:
                        self._names.add(node.name, position[node.id])
                        self._paths.add(node.path, position[node.id])
        self._names.freeze()
        self._paths.freeze()
        self._order = [(n.depth, not n.is_leaf, len(n.name), i) for i, n in enumerate(self._nodes)]

    def __len__(self) -> int:
        return len(self._nodes)

    def search(self, query: str, *, limit: int = 20) -> list[SearchHit]:
        """Best matches for ``query`` (a name, a few words, a word prefix, a path or a Hangul fragment)."""
        if limit <= 0:
            return []
        folded = fold(query)
        if not folded:
            return []
        words = tokens(folded)
        squeezed = compact(folded)
        names, paths = self._names, self._paths
        steps: list[tuple[float, Callable[[], set[int]]]] = [
            (
                EXACT,
                lambda: (
                    names.exact.get(folded, set())
                    | names.compact_exact.get(squeezed or "\0", set())
                    | paths.exact.get(_as_path(folded), set())
                ),
            ),
            (NAME_PREFIX, lambda: names.text_prefix(folded)),
            (NAME_WORDS, lambda: names.all_token_prefixes(words) if words else set()),
            (NAME_SUBSTRING, lambda: names.substring(squeezed, compacted=True) if squeezed else set()),
            (PATH_WORDS, lambda: paths.all_token_prefixes(words) if words else set()),
            (PATH_SUBSTRING, lambda: paths.substring(folded, compacted=False)),
        ]
        tier: dict[int, float] = {}
        for score, find in steps:
            for node in find():
                tier.setdefault(node, score)
            if len(tier) >= limit:
                break  # lower tiers can never outrank what we already have
        order = self._order
        best = heapq.nsmallest(limit, tier.items(), key=lambda item: (-item[1], order[item[0]]))
        return [
            SearchHit(self._nodes[i], round(score - 0.01 * min(self._nodes[i].depth - 1, 9), 4))
            for i, score in best
        ]


def _as_path(folded: str) -> str:
    """``"a>b"`` / ``"a >> b"`` -> ``"a > b"`` so that a typed full path hits the exact tier."""
    if ">" not in folded:
        return folded
    from ._text import normalise_path

    return normalise_path(folded)
