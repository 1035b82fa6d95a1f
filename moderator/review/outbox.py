"""Publishing reviewer decisions to the decisions topic, at least once.

`decide` writes the decision into the Redis outbox in the same transaction as the verdict; the
request then publishes it and deletes it once the broker acknowledged. Whatever a crash or a broker
outage leaves behind is published by `drain`, which the app runs in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime, timedelta

from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.decisions.publisher import Publisher
from moderator.review.keys import ReviewKeys
from moderator.review.models import ReviewerDecision

log = logging.getLogger(__name__)


def _traceparent(trace_id: str | None) -> str:
    """A W3C traceparent continuing the post's trace (a fresh one if it had none) with a new span."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


class Outbox:
    """Publishes outbox entries and removes them once acknowledged."""

    def __init__(self, redis: Redis, keys: ReviewKeys, publisher: Publisher) -> None:
        self.redis = redis
        self.keys = keys
        self.publisher = publisher
        self._publishing: set[str] = set()  # entries a request of this process is publishing right now

    async def publish(self, item_id: str, decision: ReviewerDecision, timeout_s: float) -> bool:
        """Publish one decision; False when the broker did not acknowledge in time (drain retries it)."""
        self._publishing.add(item_id)
        try:
            await asyncio.wait_for(self.publisher.decision(decision, _traceparent(decision.trace_id)), timeout_s)
        except (TimeoutError, KafkaError) as exc:  # the entry stays for drain()
            log.warning("reviewer decision for %s not published yet: %r", decision.post_id, exc)
            return False
        finally:
            self._publishing.discard(item_id)
        await self.redis.hdel(self.keys.outbox, item_id)
        return True

    async def drain(self, interval_s: float, timeout_s: float) -> None:
        """Forever: publish the entries no request is handling (left by crashes or outages).

        Entries younger than ``interval_s`` are left to the request that wrote them.
        """
        while True:
            with contextlib.suppress(RedisError):
                pending = await self.redis.hgetall(self.keys.outbox)
                settled = datetime.now(UTC) - timedelta(seconds=interval_s)
                for raw_id, raw in pending.items():
                    item_id, decision = raw_id.decode(), ReviewerDecision.model_validate_json(raw)
                    if item_id not in self._publishing and decision.decided_at < settled:
                        await self.publish(item_id, decision, timeout_s)
            await asyncio.sleep(interval_s)
