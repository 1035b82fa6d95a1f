"""Prometheus metrics of one service instance, in a registry of its own (several services may share a process).

Names follow Prometheus conventions: counters end in ``_total`` on the wire, durations are in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from moderator.telemetry.corrupt_entries import CorruptEntriesCollector

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """The service's instruments; ``render()`` is the body of ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumer_lag = Gauge("moderator_consumer_lag", "Records in the partition not yet fetched by this "
                                  "member (high watermark minus position).", ["topic", "partition"], registry=r)
        self.in_flight = Gauge("moderator_records_in_flight", "Records consumed and not yet committable.",
                               registry=r)
        self.consumed = Counter("moderator_records_consumed", "Records consumed from the posts topic.", registry=r)
        self.batch_size = Histogram("moderator_model_batch_size", "Posts per model forward batch.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.model_latency = Histogram("moderator_model_batch_seconds", "Wall time of one model batch.",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.end_to_end = Histogram("moderator_end_to_end_seconds", "From the post's Kafka timestamp to its "
                                    "decision being acknowledged by the broker.", buckets=SECONDS_BUCKETS, registry=r)
        self.cache_hits = Counter("moderator_cache_hits", "Posts whose scores came from the cache (or from an "
                                  "identical post scored at the same time).", registry=r)
        self.cache_misses = Counter("moderator_cache_misses", "Posts that needed the model.", registry=r)
        self.decisions = Counter("moderator_decisions", "Decisions published.", ["action", "source"], registry=r)
        self.category_actions = Counter("moderator_category_actions", "Policy rules fired, by category and action.",
                                        ["category", "action"], registry=r)
        self.dead_letters = Counter("moderator_dead_letters", "Records sent to the dead-letter topic.", ["reason"],
                                    registry=r)
        self.cache_errors = Counter("moderator_cache_errors", "Redis score-cache lookups or writes that failed "
                                    "(the post is decided without the cache).", registry=r)
        self.shadow_disagreements = Counter(
            "moderator_shadow_disagreements", "Posts a shadow policy would have decided differently.",
            ["shadow", "live_action", "shadow_action"], registry=r)
        self.commits = Counter("moderator_commits", "Offset commits acknowledged by the broker.", registry=r)
        self.stage_seconds = Histogram("moderator_stage_seconds", "Wall time of one pipeline stage (per post, "
                                       "or per batch for batched stages).", ["stage"], buckets=SECONDS_BUCKETS,
                                       registry=r)
        r.register(CorruptEntriesCollector())

    def cache_lookup(self, hit: bool) -> None:
        """Count one post's cache outcome."""
        (self.cache_hits if hit else self.cache_misses).inc()

    def model_batch(self, size: int, seconds: float) -> None:
        """Record one model batch."""
        self.batch_size.observe(size)
        self.model_latency.observe(seconds)

    def decided(self, action: str, source: str, fired: Iterable[tuple[str, str]], produced_at_ms: int) -> None:
        """Count a published decision, its fired rules (category, action) and its end-to-end latency."""
        self.decisions.labels(action, source).inc()
        for category, rule_action in fired:
            self.category_actions.labels(category, rule_action).inc()
        if produced_at_ms > 0:  # producer or log-append time; clocks may disagree slightly
            self.end_to_end.observe(max(0.0, time.time() - produced_at_ms / 1000))

    def dead_lettered(self, reason: str) -> None:
        """Count a dead letter."""
        self.dead_letters.labels(reason).inc()

    async def refresh_lag(self, consumer: AIOKafkaConsumer | None, in_flight: int) -> None:
        """Recompute per-partition lag from the consumer's fetch state (just before a scrape).

        The high watermark comes from fetch responses (``consumer.highwater``), which also works on
        brokers such as Tansu whose ListOffsets answers per batch; a partition not fetched yet has
        no high watermark and no lag series.
        """
        self.in_flight.set(in_flight)
        self.consumer_lag.clear()
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(IllegalStateError, KafkaError, TimeoutError):  # mid-rebalance: skip
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
                self.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
