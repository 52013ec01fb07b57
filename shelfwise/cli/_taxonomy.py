"""``shelfwise taxonomy ...``: tools on taxonomy files (mounted by :mod:`shelfwise.cli`).

shelfwise taxonomy diff OLD NEW [--mapping MAP.csv] [--out DIFF.json] [--html DIFF.html]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.errors import ShelfwiseError
from taxonomy import diff_taxonomies, load_mapping, load_taxonomy

__all__ = ["taxonomy_app"]

taxonomy_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Taxonomy tools: what changed between two versions.",
)
_console = Console(stderr=True)


@taxonomy_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The older taxonomy file (any supported format).")],
    new: Annotated[Path, typer.Argument(help="The newer taxonomy file.")],
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="CSV OLD -> NEW (ids or full paths) for removed, "
            "renamed (path-only trees), merged and split nodes.",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the diff as JSON here.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a readable HTML page here.")] = None,
) -> None:
    """Nodes added, removed, renamed (same id, new name), moved (same id, new parent) and, for removed
    nodes, the target the mapping gives (renamed/moved/merged/split)."""
    try:
        old_tax, new_tax = load_taxonomy(old), load_taxonomy(new)
        m = load_mapping(mapping, old_tax, new_tax) if mapping is not None else None
        d = diff_taxonomies(old_tax, new_tax, mapping=m)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(d.to_json(), encoding="utf-8")
        if html is not None:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(d.to_html(), encoding="utf-8")
    except ShelfwiseError as exc:
        _console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    table = Table(title=f"{old.name} ({old_tax.version}) -> {new.name} ({new_tax.version})")
    table.add_column("kind")
    table.add_column("nodes", justify="right")
    for kind, n in d.counts().items():
        table.add_row(kind, str(n))
    Console().print(table)
    for what, path in (("json", out), ("html", html)):
        if path is not None:
            _console.print(f"{what}: [bold]{path}[/]")
