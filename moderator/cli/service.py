"""`moderator serve` and `moderator demo`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the service commands to the CLI."""
