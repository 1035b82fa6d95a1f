"""Through the real broker and Redis: the service, a naive per-message loop, and the cache-hit path."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from moderator.bench.workload import reposts
from moderator.broker import ensure_topics, make_consumer, make_producer
from moderator.client import post_record, produce, read_topic
from moderator.decisions.schema import Decision, DecisionSource, PolicyRef
from moderator.ingest.validate import IngestLimits, validate_record
from moderator.model.base import Classifier
from moderator.policy.engine import evaluate
from moderator.policy.store import PolicyStore
from moderator.service import ModerationService, connect_redis, running
from moderator.settings import Settings


class RunResult(BaseModel):
    """One scenario run."""

    scenario: str
    max_batch: int | None = None
    max_wait_ms: float | None = None
    adaptive_wait: bool | None = None
    posts: int
    posts_per_s: float
    mean_batch: float | None = None
    latency_ms: dict[str, float] = {}  # produce -> decision, broker timestamps
    service_latency_ms: dict[str, float] = {}  # inside the service: consumed -> decided (Decision.latency_ms)
    stage_ms_per_post: dict[str, float] = {}


def fresh(settings: Settings, **overrides: object) -> Settings:
    """Settings with topics and a consumer group of their own."""
    run = uuid.uuid4().hex[:8]
    return settings.model_copy(update={"input_topic": f"bench-posts-{run}", "output_topic": f"bench-decisions-{run}",
                                       "dlq_topic": f"bench-dlq-{run}", "consumer_group": f"bench-{run}", **overrides})


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}


async def _decision_timestamps(settings: Settings, count: int) -> list[tuple[str, int]]:
    """(post_id, broker timestamp in ms) of ``count`` decisions."""
    return [(r.key.decode(), r.timestamp)
            async for r in read_topic(settings, settings.output_topic, until_count=count, timeout_s=900)]


def _throughput(first_consumed_at: float | None, stamps: Sequence[int]) -> float:
    """Posts per second from the first record consumed (wall clock, s) to the last decision (ms)."""
    assert first_consumed_at is not None
    return len(stamps) / (max(stamps) / 1000 - first_consumed_at)


async def _run_service_over(settings: Settings, classifier: Classifier, policies: PolicyStore,
                            count: int) -> tuple[ModerationService, list[tuple[str, int]]]:
    async with running(ModerationService(settings, classifier, policies, connect_redis(settings))) as service:
        stamps = await _decision_timestamps(settings, count)
    return service, stamps


async def bench_pipeline(settings: Settings, classifier: Classifier, policies: PolicyStore,
                         posts: list[dict[str, object]], max_batch: int, max_wait_ms: float) -> RunResult:
    """The service over a backlog of unique posts: sustained throughput and where the time goes."""
    settings = fresh(settings, max_batch=max_batch, max_wait_ms=max_wait_ms)
    await ensure_topics(settings)
    await produce(settings, (post_record(p) for p in posts))
    components = getattr(classifier, "stage_times", None)
    before = dict(components.seconds) if components is not None else {}
    service, stamps = await _run_service_over(settings, classifier, policies, len(posts))
    sizes = service.pipeline.infer.batcher.stats.sizes
    stages = dict(service.telemetry.times.seconds)
    if components is not None:  # the classifier's own breakdown of the "model" stage
        stages |= {k: v - before.get(k, 0.0) for k, v in components.seconds.items()}
    return RunResult(
        scenario="pipeline", max_batch=max_batch, max_wait_ms=max_wait_ms, posts=len(posts),
        posts_per_s=_throughput(service.counts.first_consumed_at, [t for _, t in stamps]), mean_batch=sum(sizes) / max(1, len(sizes)),
        stage_ms_per_post={k: round(1000 * v / len(posts), 3) for k, v in sorted(stages.items())},
    )


async def bench_latency(settings: Settings, classifier: Classifier, policies: PolicyStore,
                        posts: list[dict[str, object]], max_batch: int, max_wait_ms: float,
                        rate_per_s: float, adaptive_wait: bool) -> RunResult:
    """Low load: posts trickle in at ``rate_per_s``; latency from produce to decision (broker timestamps).

    The first post is a warm-up and not measured: before it the batcher knows no arrival rate.
    """
    settings = fresh(settings, max_batch=max_batch, max_wait_ms=max_wait_ms, adaptive_wait=adaptive_wait)
    await ensure_topics(settings)
    produced: dict[str, int] = {}
    # The platform's producer sends at once (no linger), so a post's timestamp is when it left.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        async with running(ModerationService(settings, classifier, policies, connect_redis(settings))) as service:
            while not service.runner.consumer or not service.runner.consumer.assignment():
                await asyncio.sleep(0.1)  # the group join is start-up, not latency
            for post in posts:
                meta = await producer.send_and_wait(settings.input_topic, orjson.dumps(post),
                                                    key=str(post["post_id"]).encode())
                produced[str(post["post_id"])] = meta.timestamp
                await asyncio.sleep(1 / rate_per_s)
            decisions = [r async for r in read_topic(settings, settings.output_topic, until_count=len(posts),
                                                     timeout_s=900)]
    finally:
        await producer.stop()
    measured = [r for r in decisions if r.key.decode() != str(posts[0]["post_id"])]
    end_to_end = [r.timestamp - produced[r.key.decode()] for r in measured]
    in_service = [float(orjson.loads(r.value)["latency_ms"]) for r in measured]
    sizes = service.pipeline.infer.batcher.stats.sizes[1:]
    return RunResult(scenario="latency", max_batch=max_batch, max_wait_ms=max_wait_ms, adaptive_wait=adaptive_wait,
                     posts=len(measured), posts_per_s=rate_per_s, mean_batch=sum(sizes) / max(1, len(sizes)),
                     latency_ms=_percentiles(end_to_end), service_latency_ms=_percentiles(in_service))


async def bench_naive(settings: Settings, classifier: Classifier, policies: PolicyStore,
                      posts: list[dict[str, object]]) -> RunResult:
    """The loop a user writes first: one record, one forward pass, one publish, one commit."""
    settings = fresh(settings)
    await ensure_topics(settings)
    await produce(settings, (post_record(p) for p in posts))
    limits = IngestLimits.from_settings(settings)
    consumer = make_consumer(settings, settings.input_topic)
    producer = make_producer(settings)
    await consumer.start()
    await producer.start()
    stamps: list[int] = []
    first_consumed_at: float | None = None
    try:
        while len(stamps) < len(posts):
            record = await consumer.getone()
            first_consumed_at = first_consumed_at or time.time()
            started = time.monotonic()
            post = await validate_record(record.value, limits)
            scores = classifier.score_batch([await post.model_input(limits)])[0]
            policy = policies.select(post.post.metadata)
            verdict = evaluate(policy, scores, post.post.metadata)
            decision = Decision(
                post_id=post.post.post_id, action=verdict.action, scores=scores, reasons=verdict.reasons,
                policy=PolicyRef(name=policy.name, version=policy.version), model=classifier.info,
                source=DecisionSource.MODEL, latency_ms=(time.monotonic() - started) * 1000,
                decided_at=datetime.now(UTC),
            )
            meta = await producer.send_and_wait(settings.output_topic, decision.model_dump_json().encode(),
                                                key=post.post.post_id.encode())
            await consumer.commit()
            stamps.append(meta.timestamp)
    finally:
        await consumer.stop()
        await producer.stop()
    return RunResult(scenario="naive", max_batch=1, posts=len(posts), posts_per_s=_throughput(first_consumed_at, stamps))


async def bench_cache(settings: Settings, classifier: Classifier, policies: PolicyStore,
                      scored_posts: list[dict[str, object]], count: int) -> RunResult:
    """A stream of reposts of already-scored content: every post is a cache hit, no model call."""
    settings = fresh(settings, max_in_flight=2048, fetch_max_records=1024)
    await ensure_topics(settings)
    stream = reposts([scored_posts[i % len(scored_posts)] for i in range(count)], "repost")
    await produce(settings, (post_record(p) for p in stream))
    service, stamps = await _run_service_over(settings, classifier, policies, len(stream))
    if service.counts.decisions["model"]:
        raise RuntimeError("cache benchmark reached the model: the originals were not scored first")
    return RunResult(scenario="cache", posts=len(stream), posts_per_s=_throughput(service.counts.first_consumed_at, [t for _, t in stamps]),
                     stage_ms_per_post={k: round(1000 * v / len(stream), 3)
                                        for k, v in sorted(service.telemetry.times.seconds.items())})
