"""`moderator serve` and `moderator demo`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import typer

from moderator.cli.errors import exit_interrupted, fail, policy_errors
from moderator.settings import Settings


def serve(
    log_level: str = typer.Option("INFO", help="Python logging level."),
) -> None:
    """Run the service against the configured Kafka and Redis (MODERATOR_* settings)."""
    from moderator.service import build_service, run_service
    from moderator.telemetry.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, log_level)  # MODERATOR_LOG_FORMAT=json for log shippers
    if not settings.kafka_bootstrap:
        fail("serve needs a broker: set MODERATOR_KAFKA_BOOTSTRAP (or run `moderator demo` for embedded servers)")
    with policy_errors(settings.policy_dir):
        asyncio.run(run_service(build_service(settings)))


def demo(
    count: int = typer.Option(24, "--count", "-n", min=1, help="Sample posts to produce before exiting."),
) -> None:
    """Start an embedded broker and Redis, the service, produce sample posts and print their decisions."""
    # Until the demo installs its own handler nothing is started: Ctrl-C while torch and the rest import just exits.
    previous = signal.signal(signal.SIGINT, exit_interrupted)
    try:
        from moderator.demo import demo as run

        settings = Settings()
        with policy_errors(settings.policy_dir):
            code = run(settings, count)
    finally:
        signal.signal(signal.SIGINT, previous)
    if code:
        # Interrupted: the servers are stopped; a model still loading or scoring on a worker thread is not waited for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def register(app: typer.Typer) -> None:
    """Add the service commands to the CLI."""
    app.command()(serve)
    app.command()(demo)
