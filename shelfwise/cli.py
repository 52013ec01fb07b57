"""The ``shelfwise`` command line.

shelfwise train     --taxonomy T --catalog LABELLED [--reviews R] [--images-root DIR] --model-dir M
shelfwise classify  --model-dir M --catalog C [--reviews R] [--images-root DIR] --out P.parquet
shelfwise run       the nightly flow (train if needed, classify, route, write, enqueue, report)
shelfwise evaluate  --predictions P.parquet --truth T
shelfwise report    --run latest|RUN_ID --out DIR
shelfwise review    serve | add-user | export | import | stats
shelfwise serve     the nightly deployment (cron schedule) served by this process

``train``, ``classify`` and ``run`` live here; ``evaluate``, ``report`` and ``serve`` in
:mod:`shelfwise._cli_tools`; what they share (option types, settings from flags, progress, summaries) in
:mod:`shelfwise._cli_common`; ``review`` and ``taxonomy`` are mounted from ``verification/cli.py`` and
:mod:`shelfwise._taxonomy_cli`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from shelfwise._cli_common import (
    SAMPLE,
    AutoOpt,
    CatalogOpt,
    EmbedderOpt,
    ExportMapOpt,
    ExportTaxOpt,
    ImagesOpt,
    LLMModelOpt,
    LLMUrlOpt,
    MapOpt,
    ReviewsOpt,
    ShardOpt,
    SpecOpt,
    StateOpt,
    TargetOpt,
    as_str,
    build_settings,
    count_rows,
    fail,
    print_summary,
    print_train_summary,
    progress,
)
from shelfwise._cli_tools import evaluate, report, serve
from shelfwise.errors import ShelfwiseError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = ["app", "main"]

app = typer.Typer(
    name="shelfwise",
    help="Keep an e-commerce catalog in the right taxonomy categories: embed, classify, route to review.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ---- train ----------------------------------------------------------------------------------------
@app.command()
def train(
    taxonomy: Annotated[
        Path,
        typer.Option(
            "--taxonomy", help="Taxonomy file (Google, Shopify, Best Buy JSON, one path a line, CSV/Parquet)."
        ),
    ],
    catalog: Annotated[
        Path,
        typer.Option("--catalog", help="Labelled catalog: rows with a category_path (the training labels)."),
    ],
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Folder the trained model is written to.")],
    reviews: ReviewsOpt = None,
    images_root: ImagesOpt = None,
    taxonomy_format: Annotated[
        str | None,
        typer.Option(
            "--taxonomy-format",
            help=(
                "google-txt | google-csv | shopify-txt | bestbuy-json | paths-txt | table (default: "
                "auto-detect)."
            ),
        ),
    ] = None,
    mapping: MapOpt = None,
    spec: SpecOpt = None,
    embedder: EmbedderOpt = None,
    use_images: Annotated[
        bool | None, typer.Option("--use-images/--no-images", help="Learn from product photos too.")
    ] = None,
    use_price: Annotated[
        bool | None,
        typer.Option(
            "--use-price/--no-price",
            help="Learn from the catalog's price column too (log-price per category).",
        ),
    ] = None,
    target_precision: TargetOpt = None,
    human_labels: Annotated[
        bool,
        typer.Option(
            "--human-labels/--no-human-labels", help="Use reviewers' decisions from the queue as labels."
        ),
    ] = True,
    state_dir: StateOpt = None,
) -> None:
    """Train the category model on a labelled catalog (plus reviewers' decisions)."""
    from shelfwise import pipeline

    try:
        settings = build_settings(
            state_dir=state_dir,
            embedder=embedder,
            use_images=use_images,
            target_precision=target_precision,
            use_price=use_price,
        )
        with progress("reading labelled catalog") as prog:
            tid = prog.add_task("read", total=count_rows(catalog))
            summary = pipeline.train(
                taxonomy_path=taxonomy,
                catalog=catalog,
                model_dir=model_dir,
                settings=settings,
                reviews=reviews,
                images_root=images_root,
                spec=spec,
                mapping=mapping,
                taxonomy_format=taxonomy_format,
                use_human_labels=human_labels,
                progress=lambda n: prog.advance(tid, n),
            )
    except ShelfwiseError as exc:
        fail(exc)
    print_train_summary(summary)


# ---- classify -------------------------------------------------------------------------------------
@app.command()
def classify(
    model_dir: Annotated[
        Path, typer.Option("--model-dir", help="A model folder written by `shelfwise train`.")
    ],
    catalog: CatalogOpt,
    out: Annotated[Path, typer.Option("--out", help="Predictions Parquet file (written atomically).")],
    reviews: ReviewsOpt = None,
    images_root: ImagesOpt = None,
    mapping: MapOpt = None,
    spec: SpecOpt = None,
    llm_base_url: LLMUrlOpt = None,
    llm_model: LLMModelOpt = None,
    auto_threshold: AutoOpt = None,
    shard_size: ShardOpt = None,
    enqueue: Annotated[
        bool,
        typer.Option("--enqueue/--no-enqueue", help="Write review/suspect items to the verification queue."),
    ] = True,
    state_dir: StateOpt = None,
    export_taxonomy: ExportTaxOpt = None,
    export_mapping: ExportMapOpt = None,
) -> None:
    """Classify a catalog with a trained model: predictions Parquet, routes, queue items, summary."""
    from shelfwise import _export, pipeline

    try:
        _export.check_export_flags(export_taxonomy, export_mapping)
        settings = build_settings(
            state_dir=state_dir,
            shard_size=shard_size,
            auto_threshold=auto_threshold,
            llm_base_url=llm_base_url,
            llm_model=llm_model,
        )
        with progress("classifying") as prog:
            tid = prog.add_task("classify", total=count_rows(catalog))
            summary = pipeline.classify_catalog(
                model_dir=model_dir,
                catalog=catalog,
                out=out,
                settings=settings,
                reviews=reviews,
                images_root=images_root,
                spec=spec,
                mapping=mapping,
                enqueue=enqueue,
                progress=lambda n: prog.advance(tid, n),
            )
        _export.export_after_run(summary, export_taxonomy, export_mapping)
    except ShelfwiseError as exc:
        fail(exc)
    print_summary(summary)


# ---- run (the nightly flow) -----------------------------------------------------------------------
@app.command()
def run(
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="Tonight's catalog (new and changed products).")
    ] = None,
    taxonomy: Annotated[
        Path | None, typer.Option("--taxonomy", help="Taxonomy file (needed when a model must be trained).")
    ] = None,
    labelled: Annotated[
        Path | None,
        typer.Option(
            "--labelled", help="Labelled catalog to train on when no model exists (or with --retrain)."
        ),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="Model folder (default <state-dir>/models/default).")
    ] = None,
    reviews: ReviewsOpt = None,
    images_root: ImagesOpt = None,
    mapping: MapOpt = None,
    spec: SpecOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Predictions Parquet (default <state-dir>/runs/<run_id>/predictions.parquet)."
        ),
    ] = None,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Train again even if a model exists (uses new human labels).")
    ] = False,
    sample: Annotated[
        bool, typer.Option("--sample", help="Run on the bundled real sample in data/sample (the demo).")
    ] = False,
    llm_base_url: LLMUrlOpt = None,
    llm_model: LLMModelOpt = None,
    auto_threshold: AutoOpt = None,
    shard_size: ShardOpt = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Shards classified in parallel on threads (default 2).")
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(
            "--dask-address",
            help="Run the shard tasks on this Dask scheduler (tcp://HOST:PORT); needs the `dask` extra.",
        ),
    ] = None,
    dask_workers: Annotated[
        int | None,
        typer.Option(
            "--dask-workers",
            help="Start a local Dask cluster of N single-thread processes for the shard tasks.",
        ),
    ] = None,
    incremental: Annotated[
        bool | None,
        typer.Option(
            "--incremental/--full",
            help="Carry unchanged SKUs' last predictions (default) or re-score everything.",
        ),
    ] = None,
    work_url: Annotated[
        str | None,
        typer.Option(
            "--work-url",
            help="Staged shards and prediction parts: a folder all workers see, or s3://bucket/prefix.",
        ),
    ] = None,
    state_dir: StateOpt = None,
    taxonomy_mapping: Annotated[
        Path | None,
        typer.Option(
            "--taxonomy-mapping",
            help="CSV OLD -> NEW for the night "
            "--taxonomy differs from the model's: renamed, merged, split nodes (docs/taxonomy-evolution.md).",
        ),
    ] = None,
    export_taxonomy: ExportTaxOpt = None,
    export_mapping: ExportMapOpt = None,
) -> None:
    """Run the nightly reclassification flow (Prefect, offline temporary server): train if needed, classify,
    route, write predictions, fill the review queues and write the governance report."""
    if sample:
        catalog = catalog or SAMPLE / "catalog.csv"
        taxonomy = taxonomy or SAMPLE / "taxonomy.txt"
        labelled = labelled or SAMPLE / "labelled.parquet"
        images_root = images_root or SAMPLE
    if catalog is None:
        fail(ShelfwiseError("--catalog is required (or --sample to run the bundled demo)"))
    try:
        settings = build_settings(
            state_dir=state_dir,
            shard_size=shard_size,
            auto_threshold=auto_threshold,
            llm_base_url=llm_base_url,
            llm_model=llm_model,
            workers=workers,
            dask_address=dask_address,
            dask_workers=dask_workers,
            incremental=incremental,
            work_url=work_url,
        )
        from shelfwise import _export, _migrate

        _export.check_export_flags(export_taxonomy, export_mapping)
        # a --taxonomy other than the model's: migrate, retrain (docs/taxonomy-evolution.md)
        migration = _migrate.migrate_if_needed(
            model_dir=settings.model_folder(model_dir),
            taxonomy=taxonomy,
            taxonomy_mapping=taxonomy_mapping,
            labelled=labelled,
            settings=settings,
            reviews=reviews,
            images_root=images_root,
            spec=spec,
            mapping=mapping,
        )
        from flows.run import run_night

        summary = run_night(
            catalog=str(catalog),
            settings=settings,
            taxonomy=as_str(taxonomy),
            labelled=as_str(labelled),
            model_dir=as_str(model_dir),
            reviews=as_str(reviews),
            images_root=as_str(images_root),
            spec=as_str(spec),
            mapping=mapping,
            out=as_str(out),
            retrain=retrain,
        )
        _migrate.after_run(summary, settings, migration)
        _export.export_after_run(summary, export_taxonomy, export_mapping)
    except ShelfwiseError as exc:
        fail(exc)
    print_summary(summary)


# ---- evaluate, report, serve (shelfwise/_cli_tools.py), listed after run --------------------------
app.command()(evaluate)
app.command()(report)
app.command()(serve)


def _mount_review() -> None:
    try:
        from verification.cli import review_app
    except ImportError:  # pragma: no cover
        return
    app.add_typer(review_app, name="review", help="The merchandisers' review app and queue tools.")


_mount_review()


def _mount_taxonomy() -> None:
    from shelfwise._taxonomy_cli import taxonomy_app

    app.add_typer(
        taxonomy_app, name="taxonomy", help="Taxonomy tools: diff two versions (docs/taxonomy-evolution.md)."
    )


_mount_taxonomy()


def main() -> None:  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
