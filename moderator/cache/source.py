"""The score source: a post's scores from the cache, from an identical post being scored, or computed.

It owns the whole path of a score: a batched Redis lookup (MGET), sharing the computation of
identical content in flight (``SingleFlight``), and the write-behind of new scores (batched,
pipelined, off the decision's path; identical posts share the in-flight scores until it lands).
When Redis fails, posts are scored without the cache (logged, counted), never failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from redis.exceptions import RedisError

from moderator.batching import BatchingConfig, MicroBatcher
from moderator.cache.singleflight import SingleFlight
from moderator.cache.store import ScoreCache, Scores
from moderator.telemetry import tracing
from moderator.telemetry.instrument import Telemetry

log = logging.getLogger(__name__)

# Redis batches never wait for company: what queues up while one round trip is in flight forms
# the next batch, so they grow under load and add no latency at low load.
REDIS_BATCHING = BatchingConfig(max_batch=256, max_wait_ms=0.0)


class Scored(NamedTuple):
    """A post's scores and whether this post computed them (False: cache or an identical post)."""

    scores: Scores
    computed: bool


class ScoreSource:
    """``await get(hash, model_version, compute)``: cached scores, shared in-flight scores, or ``compute()``."""

    def __init__(self, cache: ScoreCache | None, telemetry: Telemetry,
                 batching: BatchingConfig = REDIS_BATCHING) -> None:
        self.cache = cache
        self.telemetry = telemetry
        self.lookups: MicroBatcher[tuple[str, str], Scores | None] = MicroBatcher.from_config(self._lookup, batching)
        self.writes: MicroBatcher[tuple[str, str, Scores], None] = MicroBatcher.from_config(self._write, batching)
        self.flights: SingleFlight[str, Scores] = SingleFlight()

    @property
    def in_flight(self) -> int:
        """Contents being scored, or scored and waiting for their cache write."""
        return len(self.flights)

    async def get(self, content_hash: str, model_version: str, compute: Callable[[], Awaitable[Scores]],
                  on_shared: Callable[[], None] | None = None) -> Scored:
        """The scores of this content under ``model_version``; ``compute()`` runs only on a miss nobody shares.

        ``on_shared`` is called when this post waits for an identical post's scores instead.
        """
        with self.telemetry.span(tracing.CACHE_LOOKUP) as span:
            cached = await self.lookups.submit((model_version, content_hash))
            shared = cached is None and self.flights.joinable(content_hash)
            span.set_attributes({"moderator.cache.hit": cached is not None,
                                 "moderator.cache.shared_in_flight": shared})
        self.telemetry.metrics.cache_lookup(hit=cached is not None or shared)
        if cached is not None:
            return Scored(cached, computed=False)
        if shared and on_shared is not None:
            on_shared()

        async def store(scores: Scores) -> None:
            await self._store(model_version, content_hash, scores)

        scores, was_shared = await self.flights.run(content_hash, compute, store if self.cache is not None else None)
        return Scored(scores, computed=not was_shared)

    async def close(self) -> None:
        """Let pending cache writes land, then stop the batchers."""
        await self.flights.settle()
        await self.lookups.close()
        await self.writes.close()

    async def _store(self, model_version: str, content_hash: str, scores: Scores) -> None:
        try:
            await self.writes.submit((model_version, content_hash, scores))
        except RedisError as exc:
            self.telemetry.metrics.cache_errors.inc()
            log.warning("cache write failed: %s", exc)

    async def _lookup(self, keys: Sequence[tuple[str, str]]) -> list[Scores | None]:
        if self.cache is None:
            return [None] * len(keys)
        found: dict[tuple[str, str], Scores | None] = {}
        try:
            with self.telemetry.stage("cache_lookup"):
                for model_version in dict.fromkeys(version for version, _ in keys):
                    hashes = [h for v, h in keys if v == model_version]
                    for h, scores in zip(hashes, await self.cache.get_many(model_version, hashes), strict=True):
                        found[(model_version, h)] = scores
        except RedisError as exc:  # degrade: keep deciding without the cache
            self.telemetry.metrics.cache_errors.inc()
            log.warning("cache lookup failed, scoring without cache: %s", exc)
            return [None] * len(keys)
        return [found[key] for key in keys]

    async def _write(self, entries: Sequence[tuple[str, str, Scores]]) -> list[None]:
        assert self.cache is not None
        by_version: dict[str, dict[str, Scores]] = {}
        for model_version, content_hash, scores in entries:
            by_version.setdefault(model_version, {})[content_hash] = scores
        with self.telemetry.stage("cache_write"):
            for model_version, batch in by_version.items():
                await self.cache.set_many(model_version, batch)
        return [None] * len(entries)
