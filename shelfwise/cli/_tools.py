"""``shelfwise evaluate | report | serve``: the commands around the nightly run (registered on the app by
:mod:`shelfwise.cli`, after ``run``, so ``shelfwise --help`` lists them in the same order).

shelfwise evaluate  --predictions P.parquet --truth T
shelfwise report    --run latest|RUN_ID --out DIR
shelfwise serve     the nightly deployment (cron schedule) served by this process
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from shelfwise.cli._common import LabelledOpt, RunTaxonomyOpt, StateOpt, as_str, build_settings, console, fail
from shelfwise.errors import ShelfwiseError

if TYPE_CHECKING:  # each command loads what it uses when it runs: `shelfwise --help` stays instant
    from shelfwise.settings import Settings

__all__ = ["evaluate", "report", "serve"]


# ---- evaluate -------------------------------------------------------------------------------------
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
    from classifiers.metrics import evaluate_files  # loaded on use (see TYPE_CHECKING above)
    from taxonomy import load_taxonomy

    try:
        tax = load_taxonomy(taxonomy) if taxonomy is not None else None
        result = evaluate_files(predictions, truth, out_dir=out, taxonomy=tax)
    except ShelfwiseError as exc:
        fail(exc)
    printable = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
    Console().print_json(json.dumps(printable, default=float))
    if out is not None:
        console.print(f"written: {out / 'evaluation.json'} and {out / 'evaluation.html'}")


# ---- report ---------------------------------------------------------------------------------------
def report(
    run_id: Annotated[str, typer.Option("--run", help="Run id, or `latest`.")] = "latest",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default <state-dir>/runs/<run>/report).")
    ] = None,
    state_dir: StateOpt = None,
) -> None:
    """Write the data-governance report (HTML, Parquet tables, history) for a run."""
    from shelfwise.reports import write_report  # loaded on use (see TYPE_CHECKING above)

    try:
        settings = build_settings(state_dir=state_dir)
        path = write_report(run_id, settings=settings, out_dir=out)
    except ShelfwiseError as exc:
        fail(exc)
    console.print(f"report: [bold]{path}[/]")


# ---- serve the nightly deployment -----------------------------------------------------------------
def serve(
    catalog: Annotated[
        str,
        typer.Option(
            "--catalog", help="Catalog the nightly run reads (a file, folder, glob or s3:// prefix)."
        ),
    ],
    cron: Annotated[str, typer.Option("--cron", help="Cron schedule (UTC).")] = "0 2 * * *",
    taxonomy: RunTaxonomyOpt = None,
    labelled: LabelledOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Serve the nightly deployment from this process (Prefect `serve` with a cron schedule)."""
    settings = build_settings(state_dir=state_dir)
    # Prefect reads its settings (PREFECT_HOME in the state folder) when first imported: import it now
    from flows.deployment import serve_nightly

    serve_nightly(
        catalog=str(catalog),
        taxonomy=as_str(taxonomy),
        labelled=as_str(labelled),
        cron=cron,
        settings_overrides=_overrides(settings),
    )


def _overrides(settings: Settings) -> dict[str, Any]:
    """Settings as plain JSON-able values, so the flow run records them as parameters."""
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    llm = data.get("llm", {})
    if "api_key" in llm:  # never put a secret into flow-run parameters; the flow reads it from the env
        llm.pop("api_key")
    return data
