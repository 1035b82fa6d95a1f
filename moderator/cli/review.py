"""`moderator review`: the review web app and API; `moderator review export-labels`: its training labels."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from moderator.settings import Settings

review_app = typer.Typer(no_args_is_help=False, help="Human review: the web app and API, and its labels.")


@review_app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address [default: MODERATOR_REVIEW_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: MODERATOR_REVIEW_PORT]")] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Run the review web app and API on the configured Redis and Kafka (accounts: MODERATOR_REVIEW_USERS)."""
    if ctx.invoked_subcommand is not None:
        return
    from moderator.review.auth import Accounts
    from moderator.review.server import run_review_app
    from moderator.telemetry.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, log_level)
    if not settings.redis_url or not settings.kafka_bootstrap:
        raise typer.BadParameter("set MODERATOR_REDIS_URL and MODERATOR_KAFKA_BOOTSTRAP (or use `moderator demo`)")
    update = {k: v for k, v in {"review_host": host, "review_port": port}.items() if v is not None}
    settings = settings.model_copy(update=update)
    accounts = Accounts.from_settings(settings)
    if not accounts.users:
        raise typer.BadParameter("no review accounts: set MODERATOR_REVIEW_USERS or MODERATOR_REVIEW_USERS_FILE")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_review_app(settings, accounts, stop)

    asyncio.run(main())


@review_app.command("export-labels")
def export_labels(
    out: Annotated[Path, typer.Argument(help="JSONL file to write (the format `heads train --data` reads)")],
    policy: Annotated[str | None, typer.Option(help="Only items of this policy")] = None,
) -> None:
    """Write reviewer decisions as labeled JSONL for training task heads."""
    from moderator.review.labels import export_labels as export

    settings = Settings()
    if not settings.redis_url:
        raise typer.BadParameter("set MODERATOR_REDIS_URL")
    count = asyncio.run(export(settings, out, policy))
    typer.echo(f"wrote {count} labeled posts to {out}")


def register(app: typer.Typer) -> None:
    """Add `review` and its subcommands to the CLI."""
    app.add_typer(review_app, name="review")
