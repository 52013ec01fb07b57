"""Latency of taxonomy loading and TaxonomyIndex.search on the Shopify tree with Korean names.

    .venv/bin/python benchmarks/taxonomy_search.py [--data ../shared/data] [--repeats 20]

Prints load/index build times and median / p95 search latency per query group and overall.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from taxonomy import TaxonomyIndex, load_taxonomy

QUERIES = {
    "english word": ["backpack", "dog food", "curtains", "laptop", "running shoes", "coffee"],
    "english prefix": ["back", "hik", "gar", "vid"],
    "one letter": ["a", "s", "e"],
    "korean": ["배낭", "사료", "모자", "반려견 사료", "반려동물용품", "노트북"],
    "full path": ["Luggage & Bags > Backpacks", "Animals & Pet Supplies > Pet Supplies > Dog Supplies"],
    "no match": ["xyzzy", "qqqqq zzzz"],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    default = Path(
        os.environ.get("SHELFWISE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default, help="shared data folder (has taxonomies/)")
    parser.add_argument("--repeats", type=int, default=20, help="runs per query")
    args = parser.parse_args()
    folder = args.data / "taxonomies"

    start = time.perf_counter()
    en = load_taxonomy(folder / "shopify_categories_2025-01.en.txt")
    ko = load_taxonomy(folder / "shopify_categories_2025-01.ko.txt")
    both = en.with_names(ko)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    index = TaxonomyIndex(both)
    built = time.perf_counter() - start
    print(
        f"Shopify en {len(en):,} nodes + ko {len(ko):,}: load both {loaded * 1000:.0f} ms, "
        f"index build {built * 1000:.0f} ms"
    )

    everything: list[float] = []
    print(f"{'query group':<16} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}  example top hit")
    for group, queries in QUERIES.items():
        timings: list[float] = []
        for query in queries:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                hits = index.search(query, limit=20)
                timings.append((time.perf_counter() - t0) * 1000)
        everything += timings
        top = index.search(queries[0], limit=1)
        example = (
            f"{queries[0]!r} -> {top[0].node.path!r} ({top[0].score})" if top else f"{queries[0]!r} -> -"
        )
        print(
            f"{group:<16} {statistics.median(timings):>10.2f} {percentile(timings, 0.95):>8.2f} "
            f"{max(timings):>8.2f}  {example}"
        )
        del hits
    print(
        f"{'all':<16} {statistics.median(everything):>10.2f} {percentile(everything, 0.95):>8.2f} "
        f"{max(everything):>8.2f}"
    )


if __name__ == "__main__":
    main()
