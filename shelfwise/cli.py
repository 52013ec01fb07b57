"""The ``shelfwise`` command line.

shelfwise train     --taxonomy T --catalog LABELLED [--reviews R] [--images-root DIR] --model-dir M
shelfwise classify  --model-dir M --catalog C [--reviews R] [--images-root DIR] --out P.parquet
shelfwise run       the nightly flow (train if needed, classify, route, write, enqueue, report)
shelfwise evaluate  --predictions P.parquet --truth T
shelfwise report    --run latest|RUN_ID --out DIR
shelfwise review    serve | add-user | export | import | stats
shelfwise serve     the nightly deployment (cron schedule) served by this process
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

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
console = Console(stderr=True)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = REPO_DATA / "sample"

# ---- shared option types --------------------------------------------------------------------------
CatalogOpt = Annotated[
    Path, typer.Option("--catalog", help="Catalog file (CSV, Parquet or JSONL) with one row per SKU.")
]
ReviewsOpt = Annotated[
    Path | None,
    typer.Option(
        "--reviews", help="Reviews table (sku_id, review_text, optional rating), aggregated per SKU."
    ),
]
ImagesOpt = Annotated[
    Path | None,
    typer.Option("--images-root", help="Folder that relative image_path values are resolved against."),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", help="Column mapping CANONICAL=SOURCE, repeatable, e.g. --map title=product_name."),
]
SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="Catalog spec YAML (column mapping and parsing rules), e.g. data/specs/flipkart_raw.yaml.",
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Runtime state folder (default .shelfwise; env SHELFWISE_STATE_DIR)."),
]
EmbedderOpt = Annotated[
    str | None, typer.Option("--embedder", help="Text embedder: minilm (default) | e5-multilingual.")
]
LLMUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--llm-base-url",
        help="OpenAI-compatible endpoint for ambiguous items (default: env OPENAI_BASE_URL; none = LLM off).",
    ),
]
LLMModelOpt = Annotated[str | None, typer.Option("--llm-model", help="Model name at the LLM endpoint.")]
ShardOpt = Annotated[int | None, typer.Option("--shard-size", help="SKUs per shard (default 20000).")]
AutoOpt = Annotated[
    float | None,
    typer.Option(
        "--auto-threshold",
        help="Fixed confidence for auto-accept (default: per-node thresholds tuned at training).",
    ),
]
ExportTaxOpt = Annotated[
    Path | None,
    typer.Option(
        "--export-taxonomy",
        help="Also give each prediction a category of this taxonomy (with --export-mapping).",
    ),
]
ExportMapOpt = Annotated[
    Path | None,
    typer.Option(
        "--export-mapping",
        help="CSV mapping the model's categories to --export-taxonomy (ids or full paths).",
    ),
]
TargetOpt = Annotated[
    float | None,
    typer.Option(
        "--target-precision", help="Precision the auto-accept thresholds are tuned for (default 0.95)."
    ),
]


def _build_settings(
    *,
    state_dir: Path | None = None,
    embedder: str | None = None,
    shard_size: int | None = None,
    auto_threshold: float | None = None,
    target_precision: float | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    use_images: bool | None = None,
    workers: int | None = None,
    use_price: bool | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    incremental: bool | None = None,
    work_url: str | None = None,
) -> Any:
    from pydantic import ValidationError

    from shelfwise.settings import Settings, load_settings

    overrides: dict[str, Any] = {
        "state_dir": state_dir,
        "embedder": embedder,
        "shard_size": shard_size,
        "auto_threshold": auto_threshold,
        "target_precision": target_precision,
        "use_images": use_images,
        "workers": workers,
        "use_price": use_price,
        "dask_address": dask_address,
        "dask_workers": dask_workers,
        "incremental": incremental,
        "work_url": work_url,
    }
    try:
        settings = load_settings(**overrides)
        if llm_base_url is not None or llm_model is not None:
            llm = settings.llm.model_copy(
                update={
                    k: v for k, v in {"base_url": llm_base_url, "model": llm_model}.items() if v is not None
                }
            )
            settings = Settings(**{**settings.model_dump(exclude={"llm"}), "llm": llm})
    except ValidationError as exc:
        raise ShelfwiseError(
            f"invalid settings (shelfwise.toml, SHELFWISE_* env vars or flags):\n{exc}"
        ) from exc
    from shelfwise.prefect_env import configure_prefect

    configure_prefect(settings.state_dir)
    return settings


def _progress(description: str) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("SKUs"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _count_rows(path: Path) -> int | None:
    try:
        import polars as pl

        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return int(pl.scan_parquet(path).select(pl.len()).collect().item())
        if suffix in (".jsonl", ".ndjson"):
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
    except Exception:  # noqa: BLE001 - the count is only shown: an unreadable file shows none
        return None
    return None


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


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
        settings = _build_settings(
            state_dir=state_dir,
            embedder=embedder,
            use_images=use_images,
            target_precision=target_precision,
            use_price=use_price,
        )
        with _progress("reading labelled catalog") as prog:
            tid = prog.add_task("read", total=_count_rows(catalog))
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
        _fail(exc)
    table = Table(title=f"model {summary.model_version}")
    table.add_column("item")
    table.add_column("value", justify="right")
    for key in ("rows", "labelled", "human_labels", "quarantined"):
        table.add_row(key, str(getattr(summary, key)))
    report = summary.fit_report
    for key in ("trained_rows", "n_classes"):
        if key in report:
            table.add_row({"trained_rows": "trained rows", "n_classes": "categories"}[key], str(report[key]))
    heldout = report.get("heldout") or {}
    shown = {
        "leaf_accuracy": "out-of-fold top-1 accuracy",
        "ece_uncalibrated": "out-of-fold ECE before calibration",
        "ece_calibrated_cross_fitted": "out-of-fold ECE after calibration (cross-fitted)",
        "auto_share": "out-of-fold auto share",
        "auto_precision": "out-of-fold auto precision (exact)",
        "auto_precision_lower_bound": "  its 95% lower bound",
        "nodes_with_own_threshold": "categories with their own threshold",
    }
    for key, label in shown.items():
        value = heldout.get(key)
        if isinstance(value, (int, float)):
            table.add_row(label, f"{value:.3f}" if isinstance(value, float) else str(value))
    groups = (summary.fit_report.get("thresholds") or {}).get("groups") or {}
    if groups:
        th = Table(
            title=f"auto-accept thresholds (target {heldout.get('target_precision', '')}, chosen out of fold)"
        )
        for col in ("scope", "threshold", "OOF precision", "95% lower bound", "support", "coverage"):
            th.add_column(col, justify="left" if col == "scope" else "right")
        for scope, g in sorted(groups.items(), key=lambda kv: -int(kv[1].get("support", 0)))[:15]:
            prec = g.get("oof_precision")
            th.add_row(
                "global (pooled)" if scope == "*" else scope,
                str(g.get("threshold")),
                "-" if prec is None else f"{prec:.3f}",
                f"{g.get('lower_bound', 0):.3f}",
                str(g.get("support")),
                f"{g.get('coverage', 0):.3f}",
            )
        if len(groups) > 15:
            th.caption = f"{len(groups) - 15} more in the model folder's manifest.json (thresholds.groups)"
        console.print(th)
    if isinstance(report.get("stacker"), dict) and report["stacker"].get("chosen"):
        table.add_row("stacker", str(report["stacker"]["chosen"]))
    console.print(table)
    console.print(
        f"model written to [bold]{summary.model_dir}[/] (taxonomy {summary.taxonomy_version}); "
        f"quarantine: {summary.quarantine_path}"
    )


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
        settings = _build_settings(
            state_dir=state_dir,
            shard_size=shard_size,
            auto_threshold=auto_threshold,
            llm_base_url=llm_base_url,
            llm_model=llm_model,
        )
        with _progress("classifying") as prog:
            tid = prog.add_task("classify", total=_count_rows(catalog))
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
        _fail(exc)
    _print_summary(summary)


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
        _fail(ShelfwiseError("--catalog is required (or --sample to run the bundled demo)"))
    try:
        settings = _build_settings(
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
            taxonomy=_s(taxonomy),
            labelled=_s(labelled),
            model_dir=_s(model_dir),
            reviews=_s(reviews),
            images_root=_s(images_root),
            spec=_s(spec),
            mapping=mapping,
            out=_s(out),
            retrain=retrain,
        )
        _migrate.after_run(summary, settings, migration)
        _export.export_after_run(summary, export_taxonomy, export_mapping)
    except ShelfwiseError as exc:
        _fail(exc)
    _print_summary(summary)


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _overrides(settings: Any) -> dict[str, Any]:
    """Settings as plain JSON-able values, so the flow run records them as parameters."""
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    llm = data.get("llm", {})
    if "api_key" in llm:  # never put a secret into flow-run parameters; the flow reads it from the env
        llm.pop("api_key")
    return data


def _print_summary(summary: Any) -> None:
    """Print a `RunSummary` (its rows and notes are the one rendering of a run)."""
    table = Table(title=f"shelfwise run {summary.run_id}")
    table.add_column("items")
    table.add_column("count", justify="right")
    for name, value in summary.rows():
        table.add_row(name, value)
    Console().print(table)
    for line in summary.notes():
        console.print(line, markup=False, highlight=False)


# ---- evaluate -------------------------------------------------------------------------------------
@app.command()
def evaluate(
    predictions: Annotated[
        Path, typer.Option("--predictions", help="Predictions Parquet from classify/run.")
    ],
    truth: Annotated[Path, typer.Option("--truth", help="Catalog with the true category_path per sku_id.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for evaluation.json and evaluation.html.")
    ] = None,
    taxonomy: Annotated[
        Path | None,
        typer.Option("--taxonomy", help="Taxonomy for hierarchical metrics (default: from paths)."),
    ] = None,
) -> None:
    """Score predictions against known categories: accuracy, F1, hierarchy, calibration, coverage."""
    from classifiers.metrics import evaluate_files

    try:
        tax = None
        if taxonomy is not None:
            from taxonomy import load_taxonomy

            tax = load_taxonomy(taxonomy)
        result = evaluate_files(predictions, truth, out_dir=out, taxonomy=tax)
    except ShelfwiseError as exc:
        _fail(exc)
    printable = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
    Console().print_json(json.dumps(printable, default=float))
    if out is not None:
        console.print(f"written: {out / 'evaluation.json'} and {out / 'evaluation.html'}")


# ---- report ---------------------------------------------------------------------------------------
@app.command()
def report(
    run_id: Annotated[str, typer.Option("--run", help="Run id, or `latest`.")] = "latest",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default <state-dir>/runs/<run>/report).")
    ] = None,
    state_dir: StateOpt = None,
) -> None:
    """Write the data-governance report (HTML, Parquet tables, history) for a run."""
    try:
        settings = _build_settings(state_dir=state_dir)
        from shelfwise.reports import write_report

        path = write_report(run_id, settings=settings, out_dir=out)
    except ShelfwiseError as exc:
        _fail(exc)
    console.print(f"report: [bold]{path}[/]")


# ---- serve the nightly deployment -----------------------------------------------------------------
@app.command()
def serve(
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog file the nightly run reads.")],
    cron: Annotated[str, typer.Option("--cron", help="Cron schedule (UTC).")] = "0 2 * * *",
    taxonomy: Annotated[Path | None, typer.Option("--taxonomy")] = None,
    labelled: Annotated[Path | None, typer.Option("--labelled")] = None,
    state_dir: StateOpt = None,
) -> None:
    """Serve the nightly deployment from this process (Prefect `serve` with a cron schedule)."""
    settings = _build_settings(state_dir=state_dir)
    from flows.deployment import serve_nightly

    serve_nightly(
        catalog=str(catalog),
        taxonomy=_s(taxonomy),
        labelled=_s(labelled),
        cron=cron,
        settings_overrides=_overrides(settings),
    )


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
