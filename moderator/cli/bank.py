"""`moderator bank add|remove|list`: curate the hash banks of known content in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from redis.exceptions import RedisError
from rich.table import Table

from moderator.banks.schema import BankKind
from moderator.banks.store import BankError, BankStore
from moderator.cli.errors import fail
from moderator.cli.output import stdout_console
from moderator.settings import Settings

console = stdout_console()
T = TypeVar("T")

NO_REDIS = ("banks live in Redis: set MODERATOR_REDIS_URL=redis://HOST:PORT (README, \"Running Redis\", "
            "starts one)")

NameArgument = Annotated[str, typer.Argument(help="Bank name (policies refer to it: {bank: NAME})")]


def _run(operation: Callable[[BankStore], Awaitable[T]]) -> T:
    """Run one operation against the configured Redis; a bank or Redis problem ends with one line, exit 2."""
    from moderator.service import connect_redis

    settings = Settings()
    if not settings.redis_url:
        fail(NO_REDIS)

    async def go() -> T:
        redis = connect_redis(settings)
        assert redis is not None
        try:
            return await operation(BankStore(redis))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except BankError as exc:
        fail(str(exc))
    except RedisError as exc:
        fail(f"cannot reach Redis at {settings.redis_url} ({exc}): start it, or fix MODERATOR_REDIS_URL")


def hash_item(item: str, kind: BankKind, settings: Settings) -> str:
    """The bank hash of an image file (sha256 of its bytes, or its PDQ hash), or ``item`` itself as hex."""
    from moderator.banks.hashing import image_bank_hash
    from moderator.banks.schema import normalise_hash
    from moderator.ingest.validate import IngestLimits

    path = Path(item)
    if not path.is_file():
        try:
            return normalise_hash(item)
        except ValueError:
            fail(f"{item}: neither an image file nor a 64-hex-digit hash")
    try:
        return image_bank_hash(path.read_bytes(), kind, IngestLimits.from_settings(settings).image)
    except ValueError as exc:
        fail(f"{item}: {exc}")


def add(
    name: NameArgument,
    items: Annotated[list[str], typer.Argument(help="Image files, or hashes as 64 hex digits")],
    kind: Annotated[BankKind, typer.Option("--kind", help="Kind of a new bank: pdq (perceptual) or sha256 "
                                                          "(exact file bytes)")] = BankKind.PDQ,
    label: Annotated[str, typer.Option("--label", help="Why these items are banked")] = "",
    description: Annotated[str, typer.Option("--description", help="Description of a new bank")] = "",
) -> None:
    """Add images (or hashes) to a bank, creating the bank on first use."""
    settings = Settings()

    async def operation(store: BankStore) -> tuple[int, BankKind]:
        hashes = [hash_item(item, kind, settings) for item in items]  # a bad file creates no bank
        info = await store.create(name, kind, description)
        return await store.add(name, hashes, label), info.kind

    added, bank_kind = _run(operation)
    console.print(f"{name} ({bank_kind.value}): {added} added, {len(items) - added} already banked")


def remove(
    name: NameArgument,
    items: Annotated[list[str], typer.Argument(help="Image files, or hashes as 64 hex digits")],
) -> None:
    """Remove images (or hashes) from a bank."""
    settings = Settings()

    async def operation(store: BankStore) -> int:
        info = await store.info(name)
        return await store.remove(name, [hash_item(item, info.kind, settings) for item in items])

    removed = _run(operation)
    console.print(f"{name}: {removed} removed, {len(items) - removed} were not banked")


def list_banks(
    name: Annotated[str | None, typer.Argument(help="Show this bank's entries")] = None,
) -> None:
    """List banks (with entry counts), or one bank's entries (hash, time added, label)."""
    if name is None:
        async def banks(store: BankStore) -> list[tuple[str, str, int, str]]:
            return [(b.name, b.kind.value, len(await store.entries(b.name)), b.description)
                    for b in await store.banks()]

        table = Table(title="hash banks")
        for column in ("bank", "kind", "entries", "description"):
            table.add_column(column)
        for row in _run(banks):
            table.add_row(row[0], row[1], str(row[2]), row[3])
        console.print(table)
        return

    async def entries(store: BankStore) -> list[tuple[str, str, str]]:
        await store.info(name)
        return sorted((e.hash, e.label, e.added_at.isoformat()) for e in await store.entries(name))

    for digest, label, added in _run(entries):  # one entry per line, whole hashes: easy to grep and pipe
        typer.echo(f"{digest}  {added}  {label}")


def register(app: typer.Typer) -> None:
    """Add the `bank` sub-app to the CLI."""
    bank = typer.Typer(no_args_is_help=True, help="Hash banks of known content (exact sha256 and PDQ).")
    bank.command("add")(add)
    bank.command("remove")(remove)
    bank.command("list")(list_banks)
    app.add_typer(bank, name="bank")
