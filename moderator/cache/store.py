"""Redis score cache: model scores keyed by model version + content hash.

Scores, not decisions, are cached: a policy edit re-decides from cached scores without touching
the model, and a new model or head version simply starts a fresh key space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from redis.asyncio import Redis

from moderator.keys import SCORES, Keyspace
from moderator.telemetry.corrupt_entries import decode_or_miss

Scores = dict[str, float]


def parse_scores(raw: bytes | str) -> Scores:
    """A cached ``{category: probability}``; ValueError for anything else (a foreign or damaged value)."""
    value = orjson.loads(raw)
    if not isinstance(value, dict) or not value or not all(
        isinstance(v, float | int) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value.values()
    ):
        raise ValueError("not a mapping of categories to probabilities")
    return {str(k): float(v) for k, v in value.items()}


class ScoreCache:
    """Batched get/set of per-post scores in Redis."""

    def __init__(self, redis: Redis, ttl_s: int, keys: Keyspace = SCORES) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.keys = keys

    def key(self, model_version: str, content_hash: str) -> str:
        """The Redis key of one post's scores under one model version."""
        return self.keys.key(model_version, content_hash)

    async def get_many(self, model_version: str, hashes: Sequence[str]) -> list[Scores | None]:
        """One MGET for a batch of lookups; ``None`` where not cached or unreadable."""
        if not hashes:
            return []
        keys = [self.key(model_version, h) for h in hashes]
        raw = await self.redis.mget(keys)
        return [decode_or_miss(value, parse_scores, "scores", key) if value is not None else None
                for key, value in zip(keys, raw, strict=True)]

    async def set_many(self, model_version: str, scores: Mapping[str, Scores]) -> None:
        """Store a batch of scores in one pipelined round trip."""
        if not scores:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for content_hash, value in scores.items():
                pipe.set(self.key(model_version, content_hash), orjson.dumps(value), ex=self.ttl_s)
            await pipe.execute()
