"""`moderator api-key create|list|revoke`: the keys of the HTTP API, in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from moderator.api.keys import ApiKeyStore
from moderator.settings import Settings

T = TypeVar("T")


def _run(operation: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    """Run one operation against the configured Redis."""
    from moderator.service import connect_redis

    async def go() -> T:
        redis = connect_redis(Settings())
        if redis is None:
            raise typer.BadParameter("set MODERATOR_REDIS_URL: API keys live in Redis")
        try:
            return await operation(ApiKeyStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(go())


def create(name: Annotated[str, typer.Argument(help="Who the key is for (shown in listings and metrics)")]) -> None:
    """Create a key and print it once (only its salted hash is stored)."""
    key, token = _run(lambda store: store.create(name))
    typer.echo(f"created {key.key_id} for {key.name}; the key (shown only now):", err=True)
    typer.echo(token)


def list_keys() -> None:
    """List live keys: id, creation time, name (never the secrets)."""
    for key in _run(lambda store: store.list()):
        typer.echo(f"{key.key_id}  {key.created_at.isoformat()}  {key.name}")


def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (mk-<id>.<secret>, or from `list`)")]) -> None:
    """Revoke a key: the next request with it is refused."""
    if not _run(lambda store: store.revoke(key_id)):
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    """Add the `api-key` sub-app to the CLI."""
    keys = typer.Typer(no_args_is_help=True, help="Keys of the HTTP moderation API.")
    keys.command("create")(create)
    keys.command("list")(list_keys)
    keys.command("revoke")(revoke)
    app.add_typer(keys, name="api-key")
