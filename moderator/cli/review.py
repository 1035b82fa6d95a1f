"""`moderator review`: the review web app and API; its accounts and API tokens; its training labels."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from moderator.cli.errors import fail
from moderator.settings import Settings

if TYPE_CHECKING:
    from moderator.review.tokens import TokenStore

T = TypeVar("T")
review_app = typer.Typer(no_args_is_help=False, help="Human review: the web app and API, its accounts, its labels.")
user_app = typer.Typer(no_args_is_help=True, help="Review accounts: add one (printing its token once), remove one.")
token_app = typer.Typer(no_args_is_help=True, help="Review API tokens: list them, revoke one.")
review_app.add_typer(user_app, name="user")
review_app.add_typer(token_app, name="token")


@review_app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default: MODERATOR_REVIEW_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: MODERATOR_REVIEW_PORT)")] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Run the review web app and API on the configured Redis and Kafka (accounts: `review user add`)."""
    if ctx.invoked_subcommand is not None:
        return
    from moderator.review.server import run_review_app
    from moderator.telemetry.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, log_level)
    if not settings.redis_url or not settings.kafka_bootstrap:
        fail("the review app needs Redis and Kafka: set MODERATOR_REDIS_URL and MODERATOR_KAFKA_BOOTSTRAP "
             "(or run `moderator demo`)")
    update = {k: v for k, v in {"review_host": host, "review_port": port}.items() if v is not None}
    settings = settings.model_copy(update=update)
    _check_secret(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_review_app(settings, stop)

    asyncio.run(main())


@review_app.command("export-labels")
def export_labels(
    out: Annotated[Path, typer.Argument(help="JSONL file to write (the format `heads train --data` reads)")],
    policy: Annotated[str | None, typer.Option(help="Only items of this policy")] = None,
) -> None:
    """Write reviewer decisions as labeled JSONL for training task heads."""
    from moderator.review.labels import export_labels as export

    settings = Settings()
    if not settings.redis_url:
        fail("review items live in Redis: set MODERATOR_REDIS_URL=redis://HOST:PORT")
    count = asyncio.run(export(settings, out, policy))
    typer.echo(f"wrote {count} labeled posts to {out}")


def _check_secret(settings: Settings) -> None:
    from moderator.review.tokens import MIN_SECRET_CHARS

    if any(os.environ.get(name) for name in ("MODERATOR_REVIEW_USERS", "MODERATOR_REVIEW_USERS_FILE")):
        typer.echo("MODERATOR_REVIEW_USERS(_FILE) is ignored: issue tokens with `moderator review user add` "
                   "(docs/review.md, Upgrading)", err=True)
    if len(settings.review_token_secret.get_secret_value()) < MIN_SECRET_CHARS:
        fail(f"set MODERATOR_REVIEW_TOKEN_SECRET to a secret of {MIN_SECRET_CHARS}+ characters "
             "(the same for the app and these commands)")


def _with_tokens(action: Callable[[TokenStore], Awaitable[T]]) -> T:
    """Run ``action`` on the review app's token store (the configured Redis and secret)."""
    from redis.asyncio import Redis

    from moderator.review.context import token_store

    settings = Settings()
    if not settings.redis_url:
        fail("review accounts and tokens live in Redis: set MODERATOR_REDIS_URL=redis://HOST:PORT")
    _check_secret(settings)

    async def main() -> T:
        redis = Redis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
        try:
            return await action(token_store(redis, settings))
        finally:
            await redis.aclose()

    return asyncio.run(main())


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Account name (letters, digits, _ . @ -)")],
    role: Annotated[str, typer.Option(help="reviewer or admin")] = "reviewer",
    label: Annotated[str, typer.Option(help="A note on what the token is for")] = "",
) -> None:
    """Issue a fresh API token for NAME (a new account, or another token of it) and print it once."""
    from pydantic import ValidationError

    from moderator.review.auth import NewUser, issue_user_token

    try:
        user = NewUser.model_validate({"name": name, "role": role, "label": label})
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors(include_url=False)[0]["msg"]) from exc
    try:
        issued = _with_tokens(lambda tokens: issue_user_token(tokens, user))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"{name} ({role}), token id {issued.record.token_id}; the token (shown only now):", err=True)
    typer.echo(issued.token.get_secret_value())


@user_app.command("remove")
def user_remove(name: Annotated[str, typer.Argument(help="Account name")]) -> None:
    """Revoke every token of NAME, ending its sessions."""
    revoked = _with_tokens(lambda tokens: tokens.revoke_subject(name))
    typer.echo(f"revoked {len(revoked)} token(s) of {name}")


@token_app.command("list")
def token_list(name: Annotated[str | None, typer.Option(help="Only this account's tokens")] = None) -> None:
    """List live API tokens: id, account, role, created, note (never the tokens)."""
    for record in _with_tokens(lambda tokens: tokens.list(name)):
        typer.echo(f"{record.token_id}  {record.subject}  {record.role}  {record.created_at:%Y-%m-%dT%H:%M:%SZ}  "
                   f"{record.label}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="Token id from `token list`")]) -> None:
    """Revoke one API token at once, ending the sessions opened with it."""
    record = _with_tokens(lambda tokens: tokens.revoke(token_id))
    if record is None:
        raise typer.BadParameter(f"no live token {token_id}")
    typer.echo(f"revoked {token_id} of {record.subject}")


def register(app: typer.Typer) -> None:
    """Add `review` and its subcommands to the CLI."""
    app.add_typer(review_app, name="review")
