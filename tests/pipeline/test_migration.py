"""The night the taxonomy changes: reviewers' labels and open review items follow their node (real store)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from shelfwise.model_folder import with_aliases, write_aliases
from shelfwise.pipeline import Migration, enqueue_orphans, finish_migration, load_pending, route_orphans
from shelfwise.pipeline._migrate import PENDING_DIR, _keep_inputs, _save_pending, migrate_store
from shelfwise.settings import load_settings
from taxonomy import Taxonomy, diff_taxonomies, load_mapping, load_taxonomy
from verification import ItemFilter, QueueStore

OLD = [
    "Home",
    "Home > Lamps",
    "Home > Rugs",
    "Home > Vases",
    "Home > Clocks",
    "Toys",
    "Toys > Kites",
    "Toys > Puzzles",
    "Toys > Dolls",
]
NEW = ["Home", "Home > Lighting", "Home > Rugs", "Home > Decor", "Home > Kites", "Toys", "Toys > Dolls"]
MAPPING = (
    "old,new\nHome > Lamps,Home > Lighting\nHome > Vases,Home > Decor\nHome > Clocks,Home > Decor\n"
    "Toys > Kites,Home > Kites\n"
)  # Toys > Puzzles: removed without a target


def _migration(tmp_path: Path) -> Migration:
    old, new = Taxonomy.from_paths(OLD, source="old.txt"), Taxonomy.from_paths(NEW, source="new.txt")
    (tmp_path / "map.csv").write_text(MAPPING)
    return Migration(diff_taxonomies(old, new, mapping=load_mapping(tmp_path / "map.csv", old, new)))


def _enqueue(store: QueueStore, tax: Taxonomy, items: dict[str, str]) -> None:
    rows = [
        {
            "sku_id": sku,
            "queue": "low_confidence",
            "priority": 100.0 - n,
            "reason": "low_confidence",
            "category_id": tax.by_path(p).id,
            "category_path": p,
            "confidence": 0.4,
            "candidates": [{"category_id": tax.by_path(p).id, "category_path": p, "score": 0.4}],
            "taxonomy_version": tax.version,
            "model_version": "m1",
            "content_hash": f"h-{sku}",
            "title": sku,
        }
        for n, (sku, p) in enumerate(items.items())
    ]
    store.enqueue(pl.DataFrame(rows), run_id="night-1")


def test_reviewer_labels_follow_their_node_and_stale_items_are_closed(tmp_path: Path) -> None:
    m = _migration(tmp_path)
    store = QueueStore(f"sqlite:///{tmp_path / 'queue.sqlite'}")
    store.upgrade()
    try:
        _enqueue(
            store,
            m.old,
            {
                "renamed": "Home > Lamps",
                "lost": "Toys > Puzzles",
                "merged": "Home > Vases",
                "kept": "Home > Rugs",
                "open-lost": "Toys > Puzzles",
                "open-merged": "Home > Clocks",
            },
        )
        for sku, choice in (("renamed", None), ("lost", None), ("merged", "Home > Clocks"), ("kept", None)):
            [claimed] = store.claim("low_confidence", "ann")  # the highest priority first: enqueue order
            assert claimed.sku_id == sku
            if choice is None:
                store.decide(claimed.id, "ann", "accept")
            else:
                store.decide(
                    claimed.id, "ann", "choose", category_id=m.old.by_path(choice).id, category_path=choice
                )

        counts, lost = migrate_store(store, m, run_label="taxonomy-migration")

        labels = {r["sku_id"]: r for r in store.labels().iter_rows(named=True)}
        assert labels["renamed"]["category_path"] == "Home > Lighting"
        assert labels["renamed"]["category_id"] == m.new.by_path("Home > Lighting").id
        assert labels["merged"]["category_path"] == "Home > Decor"  # the chosen node was merged
        assert labels["kept"]["category_path"] == "Home > Rugs"
        assert "lost" not in labels and lost == ["lost"]
        assert counts["labels"] == {"remapped": 2, "same": 1, "lost": 1}
        locked = store.locked()
        assert locked["renamed"][:2] == (m.new.by_path("Home > Lighting").id, "Home > Lighting")
        # the decision log still has the original decision
        log = store.decisions_frame()
        assert "Toys > Puzzles" in log.filter(pl.col("sku_id") == "lost")["category_path"].to_list()
        items = {sku: store.list_items(ItemFilter(sku_id=sku))[0][0] for sku in ("open-lost", "open-merged")}
        assert items["open-lost"].status == "decided"  # superseded: its suggestion vanished
        assert items["open-merged"].status == "open"
        assert items["open-merged"].suggested_category_path == "Home > Decor"
        assert counts["items"]["superseded"] == 1 and counts["items"]["remapped"] == 1
        assert m.lost_reasons == {"reviewer label: node removed, not in the mapping file": 1}
    finally:
        store.close()


def test_old_paths_in_tonights_catalog_resolve_to_their_new_node(tmp_path: Path) -> None:
    m = _migration(tmp_path)
    assert write_aliases(tmp_path, m.new.version, m.aliases()) == 4  # Lamps, Vases, Clocks, Kites
    tax = with_aliases(tmp_path, m.new)
    assert tax.version == m.new.version
    assert tax.find_path("Home > Lamps").path == "Home > Lighting"
    assert tax.find_path("home > clocks").path == tax.find_path("Home > Vases").path == "Home > Decor"
    assert tax.find_path("Toys > Kites").path == "Home > Kites"
    assert tax.find_path("Toys > Puzzles") is None  # vanished without a target: the run routes it to review
    labelled = m.relabel(
        pl.DataFrame({"category_path": ["Home > Lamps", "Toys > Puzzles", "Home > Rugs", None]})
    )
    assert labelled["category_path"].to_list() == ["Home > Lighting", None, "Home > Rugs", None]
    assert dict(m.training) == {"remapped": 1, "lost": 1, "same": 1}
    # a model taxonomy of another version ignores the aliases file
    other = Taxonomy.from_paths([*NEW, "Toys > Games"], source="newer.txt")
    assert with_aliases(tmp_path, other).find_path("Home > Lamps") is None


def test_the_nights_end_rebuilds_the_migration_from_the_model_folder_and_routes_orphans(
    tmp_path: Path,
) -> None:
    m = _migration(tmp_path)
    folder = tmp_path / "model" / "taxonomy"
    folder.mkdir(parents=True)
    (folder / "tree.txt").write_text("\n".join(OLD) + "\n")
    (folder / "source.json").write_text(json.dumps({"file": "tree.txt", "format": None}))
    old_tax = load_taxonomy(folder / "tree.txt")
    pending = _keep_inputs(folder, old_tax, tmp_path / "map.csv")
    m.orphan_skus = frozenset({"lost-label"})
    _save_pending(pending, m)
    (folder / "tree.txt").write_text("\n".join(NEW) + "\n")  # the retrain copied NEW over OLD

    rebuilt = load_pending(tmp_path / "model")
    assert rebuilt is not None and rebuilt.diff.counts() == m.diff.counts()
    assert rebuilt.orphan_skus == {"lost-label"}

    new = m.new
    rows = [
        ("kept", "Home > Rugs", "Home > Rugs"),
        ("moved", "Home > Kites", "Home > Kites"),
        ("vanished", "Toys > Dolls", "Toys > Puzzles"),
        ("lost-label", "Toys > Dolls", "Toys > Dolls"),
    ]
    pred = pl.DataFrame(
        {
            "sku_id": [r[0] for r in rows],
            "category_id": [new.by_path(r[1]).id for r in rows],
            "category_path": [r[1] for r in rows],
            "confidence": [0.99] * 4,
            "route": ["auto"] * 4,
            "current_category_path": [r[2] for r in rows],
            "taxonomy_version": [new.version] * 4,
            "model_version": ["m2"] * 4,
            "source": ["model"] * 4,
            "reason": ["confident"] * 4,
            "queue": pl.Series([None] * 4, dtype=pl.String),
            "content_hash": ["h"] * 4,
            "title": ["t"] * 4,
        }
    )
    settings = load_settings(state_dir=tmp_path / "state")

    final, orphans = route_orphans(pred, rebuilt)
    enqueue_orphans(orphans, settings, run_id="night-2")
    block = finish_migration(rebuilt, run_dir=tmp_path / "runs" / "night-2", model_dir=tmp_path / "model")

    assert block["skus"] == {"same": 2, "remapped": 1, "lost": 1, "routed_to_review": 2}
    out = {r["sku_id"]: r for r in final.iter_rows(named=True)}
    assert {s for s, r in out.items() if r["reason"] == "taxonomy_changed"} == {"vanished", "lost-label"}
    assert out["vanished"]["route"] == "review" and out["kept"]["route"] == "auto"
    assert Path(block["diff_path"]).is_file()
    store = QueueStore(settings.queue_url or "")
    items, n = store.list_items(ItemFilter(reason="taxonomy_changed"))
    store.close()
    assert n == 2 and {i.sku_id for i in items} == {"vanished", "lost-label"}
    assert not (folder / PENDING_DIR).exists() and load_pending(tmp_path / "model") is None  # consumed
