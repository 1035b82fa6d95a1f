"""`moderator contract export`: the JSON Schemas and AsyncAPI document of the topics, generated from the models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CONTRACT_DIR = Path("docs/contract")


def export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the files to")] = CONTRACT_DIR,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when a file differs (for CI)")] = False,
) -> None:
    """Write one JSON Schema per message (post, decision, dead letter, shadow disagreement) and asyncapi.yaml."""
    from moderator.contract import rendered

    files = rendered()
    if check:
        stale = [name for name, text in files.items()
                 if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text]
        if stale:
            typer.echo(f"{out}: {', '.join(stale)} differ from the models; run `moderator contract export`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out}: up to date ({len(files)} files)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    typer.echo(f"wrote {', '.join(files)} to {out}")


def register(app: typer.Typer) -> None:
    """Add the `contract` sub-app to the CLI."""
    contract = typer.Typer(no_args_is_help=True, help="The wire contract: JSON Schemas and AsyncAPI of the topics.")
    contract.command("export")(export)
    app.add_typer(contract, name="contract")
