"""`moderator serve` and `moderator demo`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import typer

from moderator.settings import Settings


def _exit_on_policy_error(run: Callable[[], None], settings: Settings) -> None:
    """Run; a missing or invalid policy directory ends the command with one clear line, not a traceback."""
    from moderator.policy.loader import PolicyError

    try:
        run()
    except PolicyError as exc:
        typer.secho(f"moderator: {exc}\n(MODERATOR_POLICY_DIR resolves to {settings.policy_dir.resolve()}: run from the project "
                    "directory or point it at a directory of policy YAML files)", err=True, fg="red")
        raise typer.Exit(2) from exc


def serve(
    log_level: str = typer.Option("INFO", help="Python logging level."),
) -> None:
    """Run the service against the configured Kafka and Redis (MODERATOR_* settings)."""
    from moderator.service import build_service, run_service
    from moderator.telemetry.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, log_level)  # MODERATOR_LOG_FORMAT=json for log shippers
    if not settings.kafka_bootstrap:
        raise typer.BadParameter("set MODERATOR_KAFKA_BOOTSTRAP (or use `moderator demo` for embedded servers)")
    _exit_on_policy_error(lambda: asyncio.run(run_service(build_service(settings))), settings)


def demo(
    count: int = typer.Option(24, "--count", "-n", min=1, help="Sample posts to produce before exiting."),
) -> None:
    """Start an embedded broker and Redis, the service, produce sample posts and print their decisions."""
    from moderator.demo import demo as run

    settings = Settings()
    _exit_on_policy_error(lambda: run(settings, count), settings)


def register(app: typer.Typer) -> None:
    """Add the service commands to the CLI."""
    app.command()(serve)
    app.command()(demo)
