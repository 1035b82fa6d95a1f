"""The `moderator` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Real-time content moderation over Kafka.")


def main() -> None:
    """Entry point of the `moderator` script."""
    from moderator.cli import service

    service.register(app)
    app()
