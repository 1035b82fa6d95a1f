"""Serving the review app with uvicorn inside an event loop the caller already runs.

The demo and the tests run it next to the moderation service in one loop; `moderator review` runs
it alone. Signals stay with the caller: uvicorn's own handlers would replace the demo's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from moderator.review.app import create_app
from moderator.review.auth import NewUser, issue_user_token
from moderator.review.context import open_review
from moderator.review.models import Role
from moderator.settings import Settings

log = logging.getLogger(__name__)


class _InLoopServer(uvicorn.Server):
    """uvicorn without signal handling: whoever owns the loop decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections (else ~40 ms per response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def serving(app: FastAPI, sock: socket.socket, settings: Settings | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` until the block exits; yields the base URL.

    Over HTTPS when ``settings`` name a certificate (MODERATOR_REVIEW_TLS_CERTFILE and _KEYFILE).
    """
    host, port = sock.getsockname()[:2]
    certfile = settings.review_tls_certfile if settings is not None else None
    keyfile = settings.review_tls_keyfile if settings is not None else None
    # Forwarded headers are the app's business (only from MODERATOR_REVIEW_TRUSTED_PROXIES), not uvicorn's.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            proxy_headers=False, ssl_certfile=certfile, ssl_keyfile=keyfile)
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="review app")
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
            raise RuntimeError("the review app stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield f"{'https' if certfile else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run_review_app(settings: Settings, stop: asyncio.Event) -> None:
    """`moderator review`: serve the app on the configured address until ``stop`` is set."""
    async with open_review(settings) as context, \
            serving(create_app(context), bind(settings.review_host, settings.review_port), settings) as url:
        log.info("review app on %s (%d API tokens)", url, len(await context.auth.tokens.list()))
        await stop.wait()


@dataclass(frozen=True)
class DemoReview:
    """Where the demo's review app listens and how to log in."""

    url: str
    login: str


@contextlib.asynccontextmanager
async def demo_review_app(settings: Settings) -> AsyncIterator[DemoReview]:
    """The review app for `moderator demo`, with a ``demo`` admin holding a fresh token.

    Without a configured MODERATOR_REVIEW_TOKEN_SECRET the demo makes one for this run. Listens on
    the configured port, or on a free one when that is taken.
    """
    if not settings.review_token_secret.get_secret_value():
        settings = settings.model_copy(update={"review_token_secret": SecretStr(secrets.token_urlsafe(32))})
    try:
        sock = bind(settings.review_host, settings.review_port)
    except OSError:
        sock = bind(settings.review_host, 0)
    async with open_review(settings) as context, serving(create_app(context), sock, settings) as url:
        issued = await issue_user_token(context.auth.tokens, NewUser(name="demo", role=Role.ADMIN, label="demo run"))
        try:
            yield DemoReview(url=url, login=f"demo / {issued.token.get_secret_value()}")
        finally:
            await context.auth.tokens.revoke(issued.record.token_id)
