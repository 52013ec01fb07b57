"""The ``shelfwise`` command line.

shelfwise train     --taxonomy T --catalog LABELLED [--reviews R] [--images-root DIR] --model-dir M
shelfwise classify  --model-dir M --catalog C [--reviews R] [--images-root DIR] --out P.parquet
shelfwise run       the nightly flow (train if needed, classify, route, write, enqueue, report)
shelfwise evaluate  --predictions P.parquet --truth T
shelfwise report    --run latest|RUN_ID --out DIR
shelfwise review    serve | add-user | export | import | stats
shelfwise serve     the nightly deployment (cron schedule) served by this process

``train``, ``classify`` and ``run`` live here; ``evaluate``, ``report`` and ``serve`` in
:mod:`shelfwise.cli._tools`; what they share (option types, settings from flags, progress, summaries) in
:mod:`shelfwise.cli._common`; ``review`` and ``taxonomy`` are mounted from :mod:`shelfwise.cli._review`
and :mod:`shelfwise.cli._taxonomy`. Every command resolves its settings through `Settings` (defaults,
shelfwise.toml, SHELFWISE_* environment, flags). A command imports the night (and with it the model's
libraries) when it runs, not when the app loads: ``shelfwise --help`` stays instant.
"""

from __future__ import annotations

import os

import typer

from shelfwise.cli._common import (
    SAMPLE,
    AutoOpt,
    CatalogOpt,
    DaskAddressOpt,
    DaskWorkersOpt,
    EmbedderOpt,
    EnqueueOpt,
    ExportMapOpt,
    ExportTaxOpt,
    HumanLabelsOpt,
    ImagesOpt,
    IncrementalOpt,
    LabelledCatalogOpt,
    LabelledOpt,
    LLMModelOpt,
    LLMUrlOpt,
    MapOpt,
    ModelDirOpt,
    PredictionsOutOpt,
    RankingOpt,
    RetrainOpt,
    ReviewsOpt,
    RunCatalogOpt,
    RunModelDirOpt,
    RunOutOpt,
    RunTaxonomyOpt,
    SampleOpt,
    ShardOpt,
    SpecOpt,
    StateOpt,
    TargetOpt,
    TaxonomyFormatOpt,
    TaxonomyMappingOpt,
    TrainModelDirOpt,
    TrainTaxonomyOpt,
    UseImagesOpt,
    UsePriceOpt,
    WorkersOpt,
    WorkUrlOpt,
    as_str,
    build_settings,
    catalog_source,
    count_rows,
    fail,
    print_summary,
    print_train_summary,
    progress,
)
from shelfwise.cli._review import review_app
from shelfwise.cli._taxonomy import taxonomy_app
from shelfwise.cli._tools import evaluate, report, serve
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
    taxonomy: TrainTaxonomyOpt,
    catalog: LabelledCatalogOpt,
    model_dir: TrainModelDirOpt,
    reviews: ReviewsOpt = None,
    images_root: ImagesOpt = None,
    taxonomy_format: TaxonomyFormatOpt = None,
    mapping: MapOpt = None,
    spec: SpecOpt = None,
    embedder: EmbedderOpt = None,
    use_images: UseImagesOpt = None,
    use_price: UsePriceOpt = None,
    target_precision: TargetOpt = None,
    human_labels: HumanLabelsOpt = True,
    state_dir: StateOpt = None,
    ranking: RankingOpt = None,
) -> None:
    """Train the category model on a labelled catalog (plus reviewers' decisions)."""
    from shelfwise.pipeline import train as train_model  # see the module docstring: loaded on use

    try:
        settings = build_settings(
            state_dir=state_dir,
            embedder=embedder,
            use_images=use_images,
            target_precision=target_precision,
            use_price=use_price,
            rankings=ranking,
        )
        with progress("reading labelled catalog") as prog:
            tid = prog.add_task("read", total=count_rows(catalog))
            summary = train_model(
                taxonomy_path=taxonomy,
                catalog=catalog_source(catalog, reviews, images_root, spec, mapping),
                model_dir=model_dir,
                settings=settings,
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
    model_dir: ModelDirOpt,
    catalog: CatalogOpt,
    out: PredictionsOutOpt,
    reviews: ReviewsOpt = None,
    images_root: ImagesOpt = None,
    mapping: MapOpt = None,
    spec: SpecOpt = None,
    llm_base_url: LLMUrlOpt = None,
    llm_model: LLMModelOpt = None,
    auto_threshold: AutoOpt = None,
    shard_size: ShardOpt = None,
    enqueue: EnqueueOpt = True,
    state_dir: StateOpt = None,
    export_taxonomy: ExportTaxOpt = None,
    export_mapping: ExportMapOpt = None,
) -> None:
    """Classify a catalog with a trained model: predictions Parquet, routes, queue items, summary."""
    from shelfwise.night import classify_catalog  # see the module docstring: loaded on use
    from shelfwise.pipeline import export_request

    try:
        export = export_request(export_taxonomy, export_mapping)
        settings = build_settings(
            state_dir=state_dir,
            shard_size=shard_size,
            auto_threshold=auto_threshold,
            llm_base_url=llm_base_url,
            llm_model=llm_model,
        )
        with progress("classifying") as prog:
            tid = prog.add_task("classify", total=count_rows(catalog))
            summary = classify_catalog(
                catalog_source(catalog, reviews, images_root, spec, mapping),
                model_dir=model_dir,
                out=out,
                settings=settings,
                enqueue=enqueue,
                export=export,
                progress=lambda n: prog.advance(tid, n),
            )
    except ShelfwiseError as exc:
        fail(exc)
    print_summary(summary)


# ---- run (the nightly flow) -----------------------------------------------------------------------
@app.command()
def run(
    catalog: RunCatalogOpt = None,
    taxonomy: RunTaxonomyOpt = None,
    labelled: LabelledOpt = None,
    model_dir: RunModelDirOpt = None,
    reviews: ReviewsOpt = None,
    images_root: ImagesOpt = None,
    mapping: MapOpt = None,
    spec: SpecOpt = None,
    out: RunOutOpt = None,
    retrain: RetrainOpt = False,
    sample: SampleOpt = False,
    llm_base_url: LLMUrlOpt = None,
    llm_model: LLMModelOpt = None,
    auto_threshold: AutoOpt = None,
    shard_size: ShardOpt = None,
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
    dask_workers: DaskWorkersOpt = None,
    incremental: IncrementalOpt = None,
    work_url: WorkUrlOpt = None,
    state_dir: StateOpt = None,
    taxonomy_mapping: TaxonomyMappingOpt = None,
    export_taxonomy: ExportTaxOpt = None,
    export_mapping: ExportMapOpt = None,
) -> None:
    """Run the nightly reclassification flow (Prefect, offline temporary server): train if needed, classify,
    route, write predictions, fill the review queues and write the governance report."""
    from flows.run import run_night  # see the module docstring: loaded on use
    from shelfwise.night import NightRequest
    from shelfwise.pipeline import export_request

    if sample:
        catalog = catalog or str(SAMPLE / "catalog.csv")
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
        request = NightRequest(
            source=catalog_source(catalog, reviews, images_root, spec, mapping),
            taxonomy=as_str(taxonomy),
            labelled=as_str(labelled),
            model_dir=as_str(model_dir),
            out=as_str(out),
            retrain=retrain,
            taxonomy_mapping=as_str(taxonomy_mapping),
            export=export_request(export_taxonomy, export_mapping),
        )
        summary = run_night(request, settings)
    except ShelfwiseError as exc:
        fail(exc)
    print_summary(summary)


# ---- evaluate, report, serve (shelfwise/cli/_tools.py), listed after run ---------------------------
app.command()(evaluate)
app.command()(report)
app.command()(serve)
app.add_typer(review_app, name="review", help="The merchandisers' review app and queue tools.")
app.add_typer(
    taxonomy_app, name="taxonomy", help="Taxonomy tools: diff two versions (docs/taxonomy-evolution.md)."
)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
