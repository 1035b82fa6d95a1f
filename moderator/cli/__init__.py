"""The `moderator` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import importlib
import signal

import typer
from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: typer.Context) -> str | None:
    # Typer 0.29 prints "<bool>" after every flag (--json, --help), which reads as if the flag took a value.
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Real-time content moderation over Kafka.")

# Each module defines `register(app)`; imported lazily so `moderator --help` stays fast.
COMMAND_MODULES = ("service", "models", "bench", "review", "policy", "bank", "contract", "api")


def build_app() -> typer.Typer:
    """The CLI with every command group registered."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"moderator.cli.{name}").register(app)
    return app


def main() -> None:
    """Entry point of the `moderator` script."""
    from moderator.cli.errors import exit_interrupted

    previous = signal.signal(signal.SIGINT, exit_interrupted)  # Ctrl-C while the commands import: exit 130, quietly
    cli = build_app()
    signal.signal(signal.SIGINT, previous)
    cli()
