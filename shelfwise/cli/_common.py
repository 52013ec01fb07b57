"""What the ``shelfwise`` commands share (used by :mod:`shelfwise.cli` and its sub-modules).

Option types (``CatalogOpt``, ``StateOpt``, ...), settings from flags (`build_settings`), the progress bar
and row count (`progress`, `count_rows`), the error exit (`fail`, exit code 2) and the printed summaries
of a training (`print_train_summary`) and of a run (`print_summary`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import polars as pl
import typer
from pydantic import ValidationError
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
from shelfwise.prefect_env import configure_prefect

if TYPE_CHECKING:  # loaded when a command runs (`shelfwise --help` must not load the model's libraries)
    from shelfwise.night import CatalogSource
    from shelfwise.settings import Settings

__all__ = [
    "SAMPLE",
    "AutoOpt",
    "CatalogOpt",
    "DaskAddressOpt",
    "DaskWorkersOpt",
    "EmbedderOpt",
    "EnqueueOpt",
    "ExportMapOpt",
    "ExportTaxOpt",
    "HumanLabelsOpt",
    "ImagesOpt",
    "IncrementalOpt",
    "LLMModelOpt",
    "LLMUrlOpt",
    "LabelledCatalogOpt",
    "LabelledOpt",
    "MapOpt",
    "ModelDirOpt",
    "PredictionsOutOpt",
    "RankingOpt",
    "RetrainOpt",
    "ReviewsOpt",
    "RunCatalogOpt",
    "RunModelDirOpt",
    "RunOutOpt",
    "RunTaxonomyOpt",
    "SampleOpt",
    "ShardOpt",
    "SpecOpt",
    "StateOpt",
    "TargetOpt",
    "TaxonomyFormatOpt",
    "TaxonomyMappingOpt",
    "TrainModelDirOpt",
    "TrainTaxonomyOpt",
    "UseImagesOpt",
    "UsePriceOpt",
    "WorkUrlOpt",
    "WorkersOpt",
    "as_str",
    "build_settings",
    "catalog_source",
    "console",
    "count_rows",
    "fail",
    "print_summary",
    "print_train_summary",
    "progress",
]

console = Console(stderr=True)

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLE = REPO_DATA / "sample"

# ---- shared option types --------------------------------------------------------------------------
# Every option of train, classify, run, serve is defined here once; a command names its type.
TrainTaxonomyOpt = Annotated[
    Path,
    typer.Option(
        "--taxonomy", help="Taxonomy file (Google, Shopify, Best Buy JSON, one path a line, CSV/Parquet)."
    ),
]
LabelledCatalogOpt = Annotated[
    str,  # not Path: Path("s3://b/p") would lose a slash
    typer.Option(
        "--catalog",
        help="Labelled catalog: rows with a category_path (the training labels); a file, a folder or "
        "glob of part files, or an s3:// prefix.",
    ),
]
TrainModelDirOpt = Annotated[
    Path, typer.Option("--model-dir", help="Folder the trained model is written to.")
]
ModelDirOpt = Annotated[
    Path, typer.Option("--model-dir", help="A model folder written by `shelfwise train`.")
]
PredictionsOutOpt = Annotated[
    Path, typer.Option("--out", help="Predictions Parquet file (written atomically).")
]
CatalogOpt = Annotated[
    str,  # not Path: Path("s3://b/p") would lose a slash
    typer.Option(
        "--catalog",
        help="Catalog (CSV, Parquet or JSONL, one row per SKU): a file, a folder or glob of part files, "
        "or an s3:// prefix.",
    ),
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

# ---- train ----
TaxonomyFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--taxonomy-format",
        help=(
            "google-txt | google-csv | shopify-txt | bestbuy-json | paths-txt | table (default: auto-detect)."
        ),
    ),
]
UseImagesOpt = Annotated[
    bool | None, typer.Option("--use-images/--no-images", help="Learn from product photos too.")
]
UsePriceOpt = Annotated[
    bool | None,
    typer.Option(
        "--use-price/--no-price",
        help="Learn from the catalog's price column too (log-price per category).",
    ),
]
RankingOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--ranking",
        help="A leaf ranking competing for the auto-accept cut, repeatable: confidence (default) and "
        "correctness (--ranking confidence --ranking correctness: delta split between them, the one "
        "proving the most share is used; setting 'rankings').",
    ),
]
HumanLabelsOpt = Annotated[
    bool,
    typer.Option(
        "--human-labels/--no-human-labels", help="Use reviewers' decisions from the queue as labels."
    ),
]
# ---- classify ----
EnqueueOpt = Annotated[
    bool,
    typer.Option("--enqueue/--no-enqueue", help="Write review/suspect items to the verification queue."),
]
# ---- run ----
RunCatalogOpt = Annotated[
    str | None,  # not Path: Path("s3://b/p") would lose a slash
    typer.Option(
        "--catalog",
        help="Tonight's catalog (new and changed products): a file, a folder or glob of part files, "
        "or an s3:// prefix.",
    ),
]
RunTaxonomyOpt = Annotated[
    Path | None, typer.Option("--taxonomy", help="Taxonomy file (needed when a model must be trained).")
]
LabelledOpt = Annotated[
    Path | None,
    typer.Option("--labelled", help="Labelled catalog to train on when no model exists (or with --retrain)."),
]
RunModelDirOpt = Annotated[
    Path | None, typer.Option("--model-dir", help="Model folder (default <state-dir>/models/default).")
]
RunOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Predictions Parquet (default <state-dir>/runs/<run_id>/predictions.parquet)."
    ),
]
RetrainOpt = Annotated[
    bool, typer.Option("--retrain", help="Train again even if a model exists (uses new human labels).")
]
SampleOpt = Annotated[
    bool, typer.Option("--sample", help="Run on the bundled real sample in data/sample (the demo).")
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="Shards classified in parallel on threads (default 2).")
]
DaskAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--dask-address",
        help="Run the shard tasks on this Dask scheduler (tcp://HOST:PORT); needs the `dask` extra.",
    ),
]
DaskWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--dask-workers", help="Start a local Dask cluster of N single-thread processes for the shard tasks."
    ),
]
IncrementalOpt = Annotated[
    bool | None,
    typer.Option(
        "--incremental/--full",
        help="Carry unchanged SKUs' last predictions (default) or re-score everything.",
    ),
]
WorkUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--work-url",
        help="Staged shards and prediction parts: a folder all workers see, or s3://bucket/prefix.",
    ),
]
TaxonomyMappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--taxonomy-mapping",
        help="CSV OLD -> NEW for the night "
        "--taxonomy differs from the model's: renamed, merged, split nodes (docs/taxonomy-evolution.md).",
    ),
]


def catalog_source(
    catalog: str | Path,
    reviews: Path | None,
    images_root: Path | None,
    spec: Path | None,
    mapping: list[str] | None,
) -> CatalogSource:
    """The catalog flags as one `CatalogSource`."""
    from shelfwise.night import CatalogSource  # loaded on use, see TYPE_CHECKING above

    return CatalogSource(
        catalog=str(catalog),
        reviews=as_str(reviews),
        images_root=as_str(images_root),
        spec=as_str(spec),
        mapping=mapping,
    )


def build_settings(
    *,
    state_dir: Path | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    queue_url: str | None = None,
    **overrides: Any,
) -> Settings:
    """`Settings` from shelfwise.toml, SHELFWISE_* env vars and the flags given (``None`` = not given):
    ``overrides`` are settings by name (``shard_size=``, ``workers=``, ...), the LLM flags set
    ``llm.base_url`` / ``llm.model``, ``queue_url`` is a review command's ``--db-url``. Also points
    Prefect at the state folder."""
    from shelfwise.settings import Settings, load_settings  # loaded on use, see TYPE_CHECKING above

    overrides.update(state_dir=state_dir, queue_url=queue_url)
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
    configure_prefect(settings.state_dir)
    return settings


def progress(description: str) -> Progress:
    """A progress bar over SKUs on stderr."""
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


def count_rows(location: str | Path) -> int | None:
    """Rows of a Parquet or JSONL catalog (the progress bar's total); ``None`` when not cheap to know."""
    path = Path(location)
    if not path.is_file():  # a folder, glob or s3:// prefix of parts: no total shown
        return None
    try:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return int(pl.scan_parquet(path).select(pl.len()).collect().item())
        if suffix in (".jsonl", ".ndjson"):
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
    except Exception:  # noqa: BLE001 - the count is only shown: an unreadable file shows none
        return None
    return None


def fail(exc: Exception) -> NoReturn:
    """Print the error on stderr and exit with code 2."""
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def as_str(p: Path | None) -> str | None:
    return None if p is None else str(p)


def print_train_summary(summary: Any) -> None:
    """Print what `shelfwise train` learned: the per-scope thresholds, then the model's figures."""
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
        "best_cut_share_at_target": "  best-cut share at the target (chosen with the labels)",
        "best_cut_share_at_target_plus_1pt": "  best-cut share at the target + 1 point (with the labels)",
        "proven_over_best_cut_plus_1pt": "  proven share / best-cut share at target + 1 point",
        "excluded_categories": "categories excluded (provably below target)",
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
    if heldout.get("ranking"):
        compared = ", ".join(
            f"{k} {v.get('proven_share', 0):.3f}" for k, v in (heldout.get("rankings_compared") or {}).items()
        )
        table.add_row("leaf ranking (proven share)", f"{heldout['ranking']} ({compared})")
    failed = (groups.get("*") or {}).get("first_failure")
    if heldout.get("proven_share") == 0 and failed:  # say why nothing is auto-accepted (docs/quality.md)
        why = f"{failed['correct']} of {failed['accepted']} right, p = {failed['p_value']:.3f}"
        table.add_row("nothing proven: the first cut", f"{why} (a proof needs more, or surer, rows)")
    backoff = heldout.get("backoff") or {}
    if "share_of_all_rows" in backoff:
        table.add_row("back-off tier: share of all rows", f"{backoff['share_of_all_rows']:.3f}")
        table.add_row(
            "  information gain, leaf only / with back-off",
            (
                f"{backoff.get('information_gain_leaf_only', 0):.3f} / "
                f"{backoff.get('information_gain_with_backoff', 0):.3f}"
            ),
        )
    if isinstance(report.get("stacker"), dict) and report["stacker"].get("chosen"):
        table.add_row("stacker", str(report["stacker"]["chosen"]))
    console.print(table)
    console.print(
        f"model written to [bold]{summary.model_dir}[/] (taxonomy {summary.taxonomy_version}); "
        f"quarantine: {summary.quarantine_path}"
    )


def print_summary(summary: Any) -> None:
    """Print a `RunSummary` (its rows and notes are the one rendering of a run)."""
    table = Table(title=f"shelfwise run {summary.run_id}")
    table.add_column("items")
    table.add_column("count", justify="right")
    for name, value in summary.rows():
        table.add_row(name, value)
    Console().print(table)
    for line in summary.notes():
        console.print(line, markup=False, highlight=False)
