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


# SET with a TTL for every key of a batch: one command and one reply for the client to pack and
# parse per batch, where a pipeline costs it one of each per key (more than Redis's own work).
_SET_MANY = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


class ScoreCache:
    """Batched get/set of per-post scores in Redis."""

    def __init__(self, redis: Redis, ttl_s: int, keys: Keyspace = SCORES) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.keys = keys
        self._set_many = redis.register_script(_SET_MANY)

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
        """Store a batch of scores in one round trip (one script call), each key with the cache's TTL."""
        if not scores:
            return
        await self._set_many(keys=[self.key(model_version, h) for h in scores],
                             args=[self.ttl_s, *(orjson.dumps(value) for value in scores.values())])
