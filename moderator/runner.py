"""Wire a ModerationService from settings and run it until stopped (SIGINT/SIGTERM or an event)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator

from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from moderator.model.base import Classifier
from moderator.model.loader import load_classifier
from moderator.policy.loader import load_policy_set
from moderator.policy.store import PolicyStore
from moderator.review.queue import RedisReviewQueue
from moderator.service import ModerationService, ReviewSink
from moderator.settings import Settings

log = logging.getLogger(__name__)


def connect_redis(settings: Settings) -> Redis | None:
    """A Redis client with short timeouts (a slow cache must not stall the stream), or None if unset."""
    if not settings.redis_url:
        log.warning("MODERATOR_REDIS_URL is not set: running without the score cache")
        return None
    return Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)


def build_service(settings: Settings, classifier: Classifier | None = None, review: ReviewSink | None = None,
                  tracer_provider: TracerProvider | None = None) -> ModerationService:
    """The service with its policies, classifier and Redis connection.

    The classifier and the tracer provider may be given (tests); by default the provider exports
    over OTLP as the standard OTEL_* variables say.
    """
    policies = PolicyStore(load_policy_set(settings.policy_dir))
    # A classifier built here can be rebuilt when a policy reload changes categories or prompts.
    factory = functools.partial(load_classifier, settings) if classifier is None else None
    if classifier is None:
        classifier = load_classifier(settings, policies.current.head_spec())
    redis = connect_redis(settings)
    service = ModerationService(settings, classifier, policies, redis, review, tracer_provider,
                                classifier_factory=factory)
    if review is None and redis is not None:  # posts sent to review wait for people in Redis
        service.review = RedisReviewQueue(redis, settings, stopping=service.stopping)
    return service


def _settle_garbage_collector() -> None:
    """Keep the cyclic GC off the hot path once the model and clients are loaded.

    torch and transformers leave millions of long-lived objects; every full collection rescans
    them, which more than halved cache-hit throughput. Freezing moves what exists now out of the
    collector's sight, and a larger young generation collects less often under per-post churn.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def run_service(service: ModerationService, install_signal_handlers: bool = True) -> None:
    """Start, run until stopped, drain, close. SIGTERM/SIGINT trigger a graceful stop."""
    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, service.stopping.set)
    try:
        await service.start()
        _settle_garbage_collector()
        log.info("moderator consuming %s as group %s (model %s)", service.settings.input_topic,
                 service.settings.consumer_group, service.classifier.info.name)
        await service.run()
    finally:
        await service.close()
        if service.redis is not None:
            await service.redis.aclose()


@contextlib.asynccontextmanager
async def running(service: ModerationService) -> AsyncIterator[ModerationService]:
    """Run ``service`` in this event loop for the block; on exit it drains, commits and closes."""
    task = asyncio.create_task(run_service(service, install_signal_handlers=False))
    try:
        yield service
    finally:
        await service.stop()
        await task
