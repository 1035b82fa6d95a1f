"""The `moderator` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Real-time content moderation over Kafka.")

# Each module defines `register(app)`; imported lazily so `moderator --help` stays fast.
COMMAND_MODULES = ("service", "models", "bench", "review", "policy", "bank")


def build_app() -> typer.Typer:
    """The CLI with every command group registered."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"moderator.cli.{name}").register(app)
    return app


def main() -> None:
    """Entry point of the `moderator` script."""
    build_app()()
