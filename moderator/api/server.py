"""Serving the API next to a running service, in its event loop (``moderator serve``, ``moderator demo``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from moderator.api.app import create_api
from moderator.api.keys import CachedKeys, api_key_store
from moderator.api.metrics import ApiMetrics
from moderator.pipeline import PostHandler
from moderator.settings import Settings
from moderator.telemetry.server import OpsServer


@contextlib.asynccontextmanager
async def serving_api(pipeline: PostHandler, redis: Redis | None, registry: CollectorRegistry, settings: Settings,
                      port: int) -> AsyncIterator[OpsServer]:
    """Serve the API over ``pipeline`` on ``MODERATOR_API_HOST:port`` (0 picks a free port) for the block;
    its metrics go into ``registry`` (the service's, so ``/metrics`` shows both paths).

    Raises ValueError without Redis (the API keys live there) or without a 32+ character
    ``MODERATOR_API_KEY_SECRET``.
    """
    if redis is None:
        raise ValueError("the HTTP API (MODERATOR_API_PORT) needs MODERATOR_REDIS_URL: its API keys live in Redis")
    keys = CachedKeys(api_key_store(redis, settings), settings.api_key_cache_s)
    app = create_api(pipeline, keys, ApiMetrics(registry),
                     max_in_flight=settings.api_max_in_flight, max_body_bytes=settings.max_message_bytes,
                     max_inputs=settings.api_max_inputs)
    server = OpsServer(app, settings.api_host, port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
