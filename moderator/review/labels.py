"""Reviewer decisions as training data: labeled JSONL that `moderator heads train --data` reads.

One line per decided item: ``{"post": <Post JSON, image inline>, "labels": {category: 0|1}, ...}``
plus ``review`` (who, what, when) and ``policy``, which the trainer ignores. Only verdicts that say
something about categories become labels (see `models.training_labels`).
"""

from __future__ import annotations

from pathlib import Path

import orjson
from redis.asyncio import Redis

from moderator.review.keys import ReviewKeys
from moderator.review.queue import RedisReviewQueue
from moderator.settings import Settings


async def export_labels(settings: Settings, path: Path, policy: str | None = None,
                        keys: ReviewKeys | None = None) -> int:
    """Write every reviewer label (of ``policy``, or all) to ``path``; returns how many lines."""
    redis = Redis.from_url(settings.redis_url, socket_timeout=10.0)
    count = 0
    try:
        queue = RedisReviewQueue(redis, settings, keys)
        with path.open("wb") as out:
            async for record in queue.labels(policy):
                line = record.model_dump(mode="json", exclude_none=True)
                out.write(orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n")
                count += 1
    finally:
        await redis.aclose()
    return count
