"""`moderator api-key create|list|revoke`: the keys of the HTTP API (the project's token store, in Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from moderator.api.keys import api_key_store, issue_api_key
from moderator.review.tokens import TokenStore
from moderator.settings import Settings

T = TypeVar("T")


def _run(operation: Callable[[TokenStore], Awaitable[T]]) -> T:
    """Run one operation against the configured Redis, under MODERATOR_API_KEY_SECRET."""
    from moderator.service import connect_redis

    async def go() -> T:
        settings = Settings()
        redis = connect_redis(settings)
        if redis is None:
            raise typer.BadParameter("set MODERATOR_REDIS_URL: API keys live in Redis")
        try:
            return await operation(api_key_store(redis, settings))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except ValueError as exc:  # the secret is missing or too short
        raise typer.BadParameter(f"MODERATOR_API_KEY_SECRET: {exc}") from exc


def create(name: Annotated[str, typer.Argument(help="Who the key is for (its requests' user_id)")],
           label: Annotated[str, typer.Option(help="A note shown in listings")] = "") -> None:
    """Create a key and print it once (only its HMAC is stored)."""
    issued = _run(lambda store: issue_api_key(store, name, label))
    typer.echo(f"created {issued.record.token_id} for {name}; the key (shown only now):", err=True)
    typer.echo(issued.token.get_secret_value())


def list_keys() -> None:
    """List live keys: id, creation time, name, label (never the keys)."""
    for key in _run(lambda store: store.list()):
        typer.echo(f"{key.token_id}  {key.created_at.isoformat()}  {key.subject}  {key.label}")


def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `create` or `list`)")]) -> None:
    """Revoke a key: refused from the next request on (within MODERATOR_API_KEY_CACHE_S)."""
    if _run(lambda store: store.revoke(key_id)) is None:
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
