"""``shelfwise review ...``: the review app and queue tools (a typer sub-app, ``review_app``).

    shelfwise review serve --taxonomy T [--extra-taxonomy T2] [--host 127.0.0.1] [--port 8000]
                           [--trusted-proxy ADDR ...]
    shelfwise review add-user NAME [--role reviewer|admin] [--password P] [--reset]
    shelfwise review export --format csv|labelstudio --out PATH
    shelfwise review export --format labelstudio-config --taxonomy T --out PATH
    shelfwise review import PATH --format csv|labelstudio --reviewer NAME [--taxonomy T]
    shelfwise review stats
    shelfwise review upgrade
    shelfwise review release-expired

Every command resolves the queue through `Settings` like every other command: ``--db-url`` if given,
else the ``queue_url`` setting (SHELFWISE_QUEUE_URL, shelfwise.toml), else ``queue.db`` in the state folder
(``--state-dir``, SHELFWISE_STATE_DIR, ``state_dir`` in shelfwise.toml; default ``.shelfwise``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from shelfwise.cli._common import StateOpt, build_settings
from shelfwise.errors import ShelfwiseError
from taxonomy import load_taxonomy

if TYPE_CHECKING:  # the store and the web app load when a command runs: `shelfwise --help` stays instant
    from shelfwise.settings import Settings
    from verification.store import QueueStore

__all__ = ["review_app"]

review_app = typer.Typer(
    name="review",
    help="The merchandisers' review app and queue tools.",
    no_args_is_help=True,
    add_completion=False,
)


DbUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        help="Queue database URL (default: the queue_url setting: $SHELFWISE_QUEUE_URL, shelfwise.toml, or "
        "queue.db in the state folder).",
        show_default=False,
    ),
]


def _settings(db_url: str | None, state_dir: Path | None) -> Settings:
    """The command's settings: ``--db-url`` and ``--state-dir`` over env, shelfwise.toml and defaults."""
    return build_settings(state_dir=state_dir, queue_url=db_url)


class FileFormat(StrEnum):
    """Decision file formats."""

    CSV = "csv"
    LABELSTUDIO = "labelstudio"
    LABELSTUDIO_CONFIG = "labelstudio-config"


FormatOpt = Annotated[
    FileFormat,
    typer.Option(
        "--format",
        "-f",
        help=(
            "File format (labelstudio-config: the Label Studio labeling config XML for --taxonomy; export "
            "only)."
        ),
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Print shelfwise errors as one red line and exit 1 (no traceback for a user's mistake)."""
    try:
        yield
    except ShelfwiseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@contextmanager
def _store(db_url: str | None, state_dir: Path | None, *, upgrade: bool = True) -> Iterator[QueueStore]:
    """An (upgraded) store on the settings' queue, closed when the command ends."""
    from verification.store import QueueStore  # loaded on use (see TYPE_CHECKING above)

    url = _settings(db_url, state_dir).queue_url or ""
    if url.startswith("sqlite:///"):  # the state folder may not exist yet
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with QueueStore(url) as store:
        if upgrade:
            store.upgrade()
        yield store


@review_app.command("serve")
def serve(
    taxonomy: Annotated[
        Path, typer.Option("--taxonomy", "-t", help="Taxonomy reviewers choose categories from.")
    ],
    extra_taxonomy: Annotated[
        list[Path] | None,
        typer.Option(
            "--extra-taxonomy", help="The same taxonomy in another language (same ids); repeatable."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (put a TLS proxy in front for others).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    secret_key: Annotated[
        str | None,
        typer.Option(
            "--secret-key",
            envvar="SHELFWISE_REVIEW_SECRET_KEY",
            help="Signs session cookies (default: generated).",
        ),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option("--image-root", help="Folder product image paths are relative to.")
    ] = None,
    db_url: DbUrlOpt = None,
    state_dir: StateOpt = None,
    consensus: Annotated[
        bool,
        typer.Option(
            "--consensus/--no-consensus",
            envvar="SHELFWISE_REVIEW_CONSENSUS",
            help="A suspect item whose first answer overrules the suggestion needs a second reviewer.",
        ),
    ] = False,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Mark session cookies Secure (behind HTTPS).")
    ] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="Address or network of a reverse proxy whose X-Forwarded-For is believed; repeatable "
            "(default: none, the TCP peer is the client).",
        ),
    ] = None,
) -> None:
    """Run the review web app (FastAPI + uvicorn)."""
    import sqlalchemy as sa  # loaded on use (see TYPE_CHECKING above)
    import uvicorn

    from verification.app import ReviewAppConfig, create_app

    with _errors():
        url = _settings(db_url, state_dir).queue_url or ""
        app = create_app(
            ReviewAppConfig(
                db_url=url,
                taxonomy_path=str(taxonomy),
                extra_taxonomy_paths=[str(p) for p in extra_taxonomy or []],
                secret_key=secret_key,
                image_root=None if image_root is None else str(image_root),
                secure_cookies=secure_cookies,
                consensus_suspect=consensus,
                trusted_proxies=list(trusted_proxy or []),
            )
        )
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
        typer.echo(f"review app on http://{host}:{port}/ (queue {shown})")
        # The app reads X-Forwarded-For itself, from --trusted-proxy peers only; uvicorn must not rewrite
        # the client address from it (its default trusts any local peer).
        uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)


@review_app.command("add-user")
def add_user(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[
        str | None,
        typer.Option("--role", help="reviewer | admin (new users: reviewer; --reset keeps the role)."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", help="Password (asked for, hidden, when absent).", show_default=False),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Change the password/role of an existing user.")
    ] = False,
    db_url: DbUrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Create a review-app user (bcrypt-hashed password)."""
    with _errors():
        if password is None:
            password = typer.prompt(f"password for {username}", hide_input=True, confirmation_prompt=True)
        with _store(db_url, state_dir) as store:
            _add_or_reset(store, username, password, role=role, reset=reset)


def _add_or_reset(store: Any, username: str, password: str, *, role: str | None, reset: bool) -> None:
    existing = store.get_user(username) if reset else None
    if existing is not None:
        store.set_password(username, password, role=role)
        typer.echo(f"user {username} updated (role {role or existing.role})")
    else:
        store.add_user(username, password, role=role or "reviewer")
        typer.echo(f"user {username} added (role {role or 'reviewer'})")


@review_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: FormatOpt = FileFormat.CSV,
    taxonomy: Annotated[
        Path | None,
        typer.Option("--taxonomy", help="Taxonomy whose categories the labeling config offers."),
    ] = None,
    db_url: DbUrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Export the final review decisions as CSV or Label Studio JSON, or the matching labeling config.

    Label Studio: create the project with the config (``--format labelstudio-config``), then import the
    JSON tasks (``--format labelstudio``); see docs/review-app.md.
    """
    with _errors():
        if fmt == FileFormat.LABELSTUDIO_CONFIG:
            if taxonomy is None:
                raise typer.BadParameter(
                    "--format labelstudio-config needs --taxonomy, the taxonomy reviewers chose from",
                    param_hint="--taxonomy",
                )
            from verification import labelstudio_config  # loaded on use (see TYPE_CHECKING above)

            tax = load_taxonomy(taxonomy)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(labelstudio_config(tax), encoding="utf-8")
            typer.echo(f"Label Studio labeling config for {len(list(tax))} categories written to {out}")
            return
        with _store(db_url, state_dir) as store:
            n = store.export_decisions(out, fmt="labelstudio" if fmt == FileFormat.LABELSTUDIO else "csv")
        typer.echo(f"{n} decisions written to {out}")


@review_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="CSV or Label Studio JSON export to read.")],
    fmt: FormatOpt = FileFormat.CSV,
    reviewer: Annotated[
        str | None,
        typer.Option("--reviewer", help="Who imports (logged; default $USER).", show_default=False),
    ] = None,
    taxonomy: Annotated[
        Path | None, typer.Option("--taxonomy", help="Resolves category paths without ids to taxonomy nodes.")
    ] = None,
    db_url: DbUrlOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Import decisions (e.g. labelled in Label Studio) as final human decisions."""
    with _errors():
        if fmt == FileFormat.LABELSTUDIO_CONFIG:
            raise typer.BadParameter(
                "labelstudio-config is a labeling config, not decisions; import a CSV or Label Studio JSON "
                "export (--format csv or --format labelstudio)",
                param_hint="--format",
            )
        tax = load_taxonomy(taxonomy) if taxonomy is not None else None
        who = reviewer or os.environ.get("USER") or "import"
        with _store(db_url, state_dir) as store:
            n = store.import_decisions(path, fmt=fmt.value, reviewer=who, taxonomy=tax)
        typer.echo(f"{n} decisions imported from {path} (as {who})")


@review_app.command("stats")
def stats(db_url: DbUrlOpt = None, state_dir: StateOpt = None) -> None:
    """Queue sizes by status, human labels, and decisions per reviewer."""
    with _errors(), _store(db_url, state_dir) as store:
        console = Console()
        counts = store.queue_counts()
        table = Table(title="review queues")
        statuses = ["open", "claimed", "decided"]
        table.add_column("queue")
        for s in statuses:
            table.add_column(s, justify="right")
        for queue, by_status in counts.items():
            table.add_row(queue, *(str(by_status.get(s, 0)) for s in statuses))
        table.add_row(
            "total", *(str(sum(c.get(s, 0) for c in counts.values())) for s in statuses), style="bold"
        )
        console.print(table)
        decisions = store.decisions_frame()
        labels = store.labels()
        console.print(f"human labels (accept/choose, for training): {labels.height}")
        if decisions.is_empty():
            console.print("no decisions yet")
            return
        per = (
            decisions.group_by("reviewer")
            .agg(
                pl.len().alias("decisions"),
                (pl.col("kind") == "skip").sum().alias("skips"),
                pl.col("duration_ms").median().alias("median_ms"),
                pl.col("decided_at").max().alias("last"),
            )
            .sort("decisions", descending=True)
        )
        rt = Table(title="decisions per reviewer")
        for col in ("reviewer", "decisions", "skips", "median s", "last (UTC)"):
            rt.add_column(col, justify="left" if col == "reviewer" else "right")
        for r in per.iter_rows(named=True):
            median = "-" if r["median_ms"] is None else f"{r['median_ms'] / 1000:.1f}"
            rt.add_row(
                r["reviewer"], str(r["decisions"]), str(r["skips"]), median, f"{r['last']:%Y-%m-%d %H:%M}"
            )
        console.print(rt)


@review_app.command("upgrade")
def upgrade(db_url: DbUrlOpt = None, state_dir: StateOpt = None) -> None:
    """Create or migrate the queue database schema (Alembic upgrade head)."""
    with _errors(), _store(db_url, state_dir, upgrade=False) as store:
        before = store.schema_revision()
        store.upgrade()
        typer.echo(f"queue schema at {store.schema_revision()} (was {before or 'empty'})")


@review_app.command("release-expired")
def release_expired(db_url: DbUrlOpt = None, state_dir: StateOpt = None) -> None:
    """Return claims whose lease expired to their queues."""
    with _errors(), _store(db_url, state_dir) as store:
        typer.echo(f"{store.release_expired()} expired claims released")
