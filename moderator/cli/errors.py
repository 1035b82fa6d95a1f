"""User mistakes end a command with one line on stderr (what, where, how to fix) and exit code 2."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import typer

USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print ``moderator: message`` on stderr and exit with code 2 (a usage error, as click's own)."""
    typer.secho(f"moderator: {message}", err=True, fg="red")
    raise typer.Exit(USAGE_ERROR)


def policy_dir_problem(message: str, policy_dir: Path) -> str:
    """A policy loading error, with how to point the command at the right directory when it is missing."""
    if policy_dir.is_dir():
        return message
    return (f"policy directory {policy_dir} not found (resolves to {policy_dir.resolve()}): run from the "
            "repository root, or set MODERATOR_POLICY_DIR or --policy-dir to a directory of policy YAML files")


@contextlib.contextmanager
def policy_errors(policy_dir: Path) -> Iterator[None]:
    """Turn a missing or invalid policy directory into one clear line and exit code 2, not a traceback."""
    from moderator.policy.loader import PolicyError

    try:
        yield
    except PolicyError as exc:
        fail(policy_dir_problem(str(exc), policy_dir))


def read_image_file(path: Path) -> bytes:
    """The bytes of an image file given on the command line, or one line saying why it cannot be used."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"--image {path}: no such file")
    except IsADirectoryError:
        fail(f"--image {path}: is a directory; give an image file (JPEG, PNG, GIF or WebP)")
    except OSError as exc:
        fail(f"--image {path}: cannot read: {exc.strerror or exc}")


def exit_interrupted(signum: int, _frame: object) -> None:
    """A signal handler for while nothing needs cleaning up (modules importing): exit at once, quietly."""
    os._exit(128 + signum)
