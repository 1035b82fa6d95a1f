"""The console commands print tables on."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped or redirected, rich assumes 80 columns and cuts wide tables' headers; a file has no width to fit.
PIPED_WIDTH = 240


def stdout_console() -> Console:
    """A console on stdout: the terminal's width on a terminal, wide enough for every table otherwise."""
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
