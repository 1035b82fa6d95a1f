"""Serving the review app with uvicorn inside an event loop the caller already runs.

The demo and the tests run it next to the moderation service in one loop; `moderator review` runs
it alone. Signals stay with the caller: uvicorn's own handlers would replace the demo's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from moderator.review.app import create_app
from moderator.review.auth import Accounts, demo_accounts
from moderator.review.context import open_review
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
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def serving(app: FastAPI, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` until the block exits; yields the base URL."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="review app")
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
            raise RuntimeError("the review app stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run_review_app(settings: Settings, accounts: Accounts, stop: asyncio.Event) -> None:
    """`moderator review`: serve the app on the configured address until ``stop`` is set."""
    async with open_review(settings, accounts) as context, \
            serving(create_app(context), bind(settings.review_host, settings.review_port)) as url:
        log.info("review app on %s (%d accounts)", url, len(accounts.users))
        await stop.wait()


@dataclass(frozen=True)
class DemoReview:
    """Where the demo's review app listens and how to log in."""

    url: str
    login: str


@contextlib.asynccontextmanager
async def demo_review_app(settings: Settings) -> AsyncIterator[DemoReview]:
    """The review app for `moderator demo`: configured accounts, or a ``demo`` admin with a fresh token.

    Listens on the configured port, or on a free one when that is taken.
    """
    accounts, token = demo_accounts(settings)
    login = f"demo / {token}" if token else "an account from MODERATOR_REVIEW_USERS"
    try:
        sock = bind(settings.review_host, settings.review_port)
    except OSError:
        sock = bind(settings.review_host, 0)
    async with open_review(settings, accounts) as context, serving(create_app(context), sock) as url:
        yield DemoReview(url=url, login=login)
