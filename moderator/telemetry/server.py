"""The operations HTTP server: ``/metrics`` (Prometheus), ``/health`` (liveness) and ``/ready`` (readiness).

It runs in the service's own event loop, so scrapes and checks read the consumer and Redis
clients from the loop that owns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp

from moderator.telemetry.health import Readiness
from moderator.telemetry.metrics import ServiceMetrics


def ops_app(metrics: ServiceMetrics, readiness: Callable[[], Awaitable[Readiness]],
            before_scrape: Callable[[], Awaitable[None]]) -> FastAPI:
    """The three endpoints; ``before_scrape`` refreshes gauges computed on demand (consumer lag)."""
    app = FastAPI(title="moderator operations", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        await before_scrape()
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=Readiness)
    async def ready() -> JSONResponse:
        report = await readiness()
        return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)

    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service (it drains on SIGTERM itself)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsServer:
    """Serves an app on ``host:port`` (port 0 picks a free one) inside the running event loop."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._server = _QuietServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        """Whether the server accepts requests."""
        return self._task is not None and not self._task.done() and self._server.started

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        assert self._socket is not None, "server not started"
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind (raising OSError if the port is taken) and start serving."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it every
        # response waited ~40 ms for the client's delayed ACK (Nagle): 44 ms per request, not 0.4.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="ops-http")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # surfaces a startup failure

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
