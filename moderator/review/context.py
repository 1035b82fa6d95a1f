"""Everything the review app runs on, opened and closed together: Redis, the producer, the outbox.

The app is built from a `ReviewContext` (see `app.create_app`), so the CLI, the demo and the tests
own its lifecycle the same way and no module holds a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from moderator.banks.store import BankStore
from moderator.broker import ensure_topics, make_producer, start_with_retry
from moderator.decisions.publisher import Publisher
from moderator.ingest.validate import IngestLimits
from moderator.review.audit import AuditLog
from moderator.review.auth import Authenticator, Sessions
from moderator.review.banks import BankAdmin
from moderator.review.keys import ReviewKeys
from moderator.review.metrics import ReviewMetrics
from moderator.review.outbox import Outbox
from moderator.review.queue import RedisReviewQueue
from moderator.review.throttle import LoginThrottle
from moderator.review.tokens import TokenStore
from moderator.settings import Settings

PUBLISH_TIMEOUT_S = 10.0
DRAIN_INTERVAL_S = 5.0


@dataclass
class ReviewContext:
    """The review app's collaborators."""

    settings: Settings
    queue: RedisReviewQueue
    audit: AuditLog
    auth: Authenticator
    outbox: Outbox
    banks: BankAdmin
    publish_timeout_s: float = PUBLISH_TIMEOUT_S


def token_store(redis: Redis, settings: Settings, keys: ReviewKeys | None = None) -> TokenStore:
    """The review app's API tokens (ValueError without a MODERATOR_REVIEW_TOKEN_SECRET)."""
    return TokenStore(redis, (keys or ReviewKeys()).tokens, settings.review_token_secret)


@contextlib.asynccontextmanager
async def open_review(settings: Settings, keys: ReviewKeys | None = None) -> AsyncIterator[ReviewContext]:
    """Connect to Redis and the broker, start the outbox drain; close all of it on exit."""
    if not settings.redis_url or not settings.kafka_bootstrap:
        raise ValueError("the review app needs MODERATOR_REDIS_URL and MODERATOR_KAFKA_BOOTSTRAP")
    keys = keys or ReviewKeys()
    if settings.create_topics:
        await ensure_topics(settings)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        tokens = token_store(redis, settings, keys)
    except ValueError:
        await redis.aclose()
        raise
    stopping = asyncio.Event()
    producer = make_producer(settings)
    try:
        await start_with_retry(producer, settings, stopping)
        publisher = Publisher(producer, settings.output_topic, settings.dlq_topic, settings.kafka_retry_backoff_max_s,
                              stopping)
        outbox = Outbox(redis, keys, publisher)
        audit = AuditLog(redis, keys, settings.review_audit_max, settings.review_security_log_max)
        auth = Authenticator(tokens, Sessions(redis, keys, settings.review_session_ttl_s),
                             LoginThrottle(redis, keys.throttle, settings), audit, ReviewMetrics())
        context = ReviewContext(
            settings=settings, queue=RedisReviewQueue(redis, settings, keys), audit=audit, auth=auth, outbox=outbox,
            # The service's matcher reads the same store (policy.runtime), so changes reach it within bank_refresh_s.
            banks=BankAdmin(BankStore(redis), audit, IngestLimits.from_settings(settings).image),
        )
        drain = asyncio.create_task(outbox.drain(DRAIN_INTERVAL_S, PUBLISH_TIMEOUT_S), name="review outbox")
        try:
            yield context
        finally:
            stopping.set()
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
    finally:
        await producer.stop()
        await redis.aclose()
