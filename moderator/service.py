"""The moderation service: consume → validate → cache lookup → batch → infer → policy → publish → commit.

`ModerationService` owns the Kafka clients, the Redis connection, the classifier and the batchers,
with one start/run/stop lifecycle. Each consumed record becomes one task that runs the data path
top to bottom; the micro-batchers underneath turn concurrent tasks into batched Redis and model calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, get_current_span
from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.banks.schema import BankMatch
from moderator.batching import MicroBatcher
from moderator.broker import ensure_topics, make_consumer, make_producer, start_with_retry
from moderator.cache.store import ScoreCache, Scores
from moderator.decisions.publisher import Publisher
from moderator.decisions.schema import Decision, DecisionSource, PolicyRef
from moderator.ingest.errors import IngestError
from moderator.ingest.fetch import new_fetch_client
from moderator.ingest.images import decode_image
from moderator.ingest.offsets import OffsetTracker
from moderator.ingest.schema import DeadLetterReason
from moderator.ingest.validate import IngestLimits, ValidPost, post_id_of, validate_record
from moderator.model.base import Classifier, HeadSpec, ModelInput
from moderator.model.split import score_splitting
from moderator.policy.engine import Verdict, evaluate
from moderator.policy.escalation import EscalationTier
from moderator.policy.runtime import PolicyRuntime
from moderator.policy.schema import Action, Policy
from moderator.policy.store import PolicyStore
from moderator.settings import Settings
from moderator.telemetry import tracing
from moderator.telemetry.health import Readiness, check_readiness
from moderator.telemetry.metrics import ServiceMetrics
from moderator.telemetry.server import OpsServer, ops_app
from moderator.telemetry.stages import StageTimes

log = logging.getLogger(__name__)


class ReviewSink(Protocol):
    """Where posts whose action is ``review`` go for a human decision."""

    async def enqueue(self, post: ValidPost, decision: Decision) -> None: ...


@dataclass
class ServiceStats:
    """Running counters, read by tests, the demo and the metrics exporter."""

    consumed: int = 0
    first_consumed_at: float | None = None  # wall clock (s): when throughput measurements start
    decisions: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in DecisionSource})
    dead_letters: dict[str, int] = field(default_factory=dict)
    cache_errors: int = 0
    commits: int = 0
    # Seconds spent per stage, summed over posts or batches (stages overlap: they run concurrently).
    stages: StageTimes = field(default_factory=StageTimes)


@dataclass(frozen=True)
class _Outcome:
    """Everything known about one post once it is decided, before publishing."""

    post: ValidPost
    policy: Policy
    verdict: Verdict
    matches: Sequence[BankMatch]
    decision: Decision


class _Revoke(ConsumerRebalanceListener):
    def __init__(self, service: ModerationService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.service._drain_partitions(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))


class ModerationService:
    """One consumer-group member of the moderation service."""

    def __init__(self, settings: Settings, classifier: Classifier, policies: PolicyStore,
                 redis: Redis | None = None, review: ReviewSink | None = None,
                 tracer_provider: TracerProvider | None = None,
                 classifier_factory: Callable[[HeadSpec], Classifier] | None = None) -> None:
        self.settings = settings
        self.classifier = classifier
        self.policies = policies
        self.classifier_factory = classifier_factory
        self.redis = redis
        self.review = review
        self.cache = ScoreCache(redis, settings.cache_ttl_s) if redis is not None else None
        self.limits = IngestLimits.from_settings(settings)
        self._fetch_client = new_fetch_client(self.limits.fetch)
        # Policies with an `escalation:` block ask a generative VLM about posts in their uncertainty band.
        self.escalation = EscalationTier(settings, redis, self.limits)
        self.stats = ServiceStats()
        self.metrics = ServiceMetrics()
        # Banks, shadow policies, recording for backtests, hot reload (rebuilding the classifier if prompts change).
        self.policy_runtime = PolicyRuntime(settings, policies, redis, self.metrics.registry,
                                            self._rebuild_classifier if classifier_factory is not None else None)
        self.tracer_provider = tracer_provider or tracing.build_tracer_provider()
        self.tracer = self.tracer_provider.get_tracer(tracing.TRACER_NAME)
        self.ops: OpsServer | None = None
        self.consuming = False
        self.stopping = asyncio.Event()
        self._model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # Each item carries its post's span context, so the batch span can link to every post in it.
        self.model_batcher: MicroBatcher[tuple[ModelInput, SpanContext], Scores] = MicroBatcher(
            self._score_batch, settings.max_batch, settings.max_wait_ms, adaptive_wait=settings.adaptive_wait
        )
        # Redis batches never wait for company: what queues up while one round trip is in flight
        # forms the next batch, so they grow under load and add no latency at low load.
        self.cache_batcher: MicroBatcher[str, Scores | None] = MicroBatcher(self._lookup_batch, 256, 0.0)
        self.cache_writer: MicroBatcher[tuple[str, str, Scores], None] = MicroBatcher(self._write_batch, 256, 0.0)
        self._in_flight_scores: dict[str, asyncio.Future[Scores]] = {}
        self._stores: set[asyncio.Task[None]] = set()  # cache writes still running after their decision
        self._offsets = OffsetTracker()
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._paused = False
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.publisher: Publisher | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve /metrics, /health, /ready (if configured), connect to the broker (retrying) and join the group."""
        if self.settings.metrics_port is not None:
            app = ops_app(self.metrics, self.readiness, self._refresh_gauges)
            self.ops = OpsServer(app, self.settings.metrics_host, self.settings.metrics_port)
            await self.ops.start()
        if self.settings.create_topics:
            await ensure_topics(self.settings)
        self.producer = make_producer(self.settings)
        await start_with_retry(self.producer, self.settings, self.stopping)
        self.publisher = Publisher(self.producer, self.settings.output_topic, self.settings.dlq_topic,
                                   self.settings.kafka_retry_backoff_max_s, self.stopping)
        self.policy_runtime.start(self.producer)
        self.consumer = make_consumer(self.settings)
        self.consumer.subscribe([self.settings.input_topic], listener=_Revoke(self))
        await start_with_retry(self.consumer, self.settings, self.stopping)
        self.consuming = True

    async def readiness(self) -> Readiness:
        """Whether this instance can take traffic: broker and Redis reachable, model loaded, not draining."""
        return await check_readiness(self.consumer if self.consuming else None, self.redis, self.classifier,
                                     self.stopping.is_set())

    async def _rebuild_classifier(self, heads: HeadSpec) -> None:
        """Build a classifier for new categories/prompts off the event loop, then swap it in (policy reload)."""
        assert self.classifier_factory is not None
        self.classifier = await asyncio.to_thread(self.classifier_factory, heads)

    async def _refresh_gauges(self) -> None:
        await self.metrics.refresh_lag(self.consumer if self.consuming else None, self._offsets.in_flight)

    async def run(self) -> None:
        """Consume until ``stop()`` is called, then drain what is in flight and commit."""
        assert self.consumer is not None
        last_commit = time.monotonic()
        try:
            while not self.stopping.is_set():
                batches = await self.consumer.getmany(timeout_ms=100, max_records=self.settings.fetch_max_records)
                for tp, records in batches.items():
                    for record in records:
                        self._dispatch(tp, record)
                self._apply_backpressure()
                if (time.monotonic() - last_commit) * 1000 >= self.settings.commit_interval_ms:
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self._drain_partitions(list(self._tasks))

    async def stop(self) -> None:
        """Ask ``run()`` to finish; safe to call from a signal handler."""
        self.stopping.set()

    async def close(self) -> None:
        """Release clients and workers (after ``run()`` returned)."""
        await self.policy_runtime.close()
        await self.escalation.close()
        await self.model_batcher.close()
        if self._stores:
            await asyncio.wait(self._stores)
        await self.cache_batcher.close()
        await self.cache_writer.close()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        self._model_pool.shutdown(wait=False, cancel_futures=True)
        await self._fetch_client.aclose()
        if self.ops is not None:
            await self.ops.stop()
        self.tracer_provider.force_flush(timeout_millis=5000)

    # ----- Kafka plumbing: dispatch, backpressure, commits, rebalances ------------------------

    def _dispatch(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.stats.consumed += 1
        if self.stats.first_consumed_at is None:
            self.stats.first_consumed_at = time.time()
        self.metrics.consumed.inc()
        self._offsets.add(tp, record.offset)
        task = asyncio.create_task(self._handle(record), name=f"post {tp.partition}:{record.offset}")
        tasks = self._tasks.setdefault(tp, set())
        tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            if not t.cancelled() and t.exception() is None:
                self._offsets.done(tp, record.offset)
            elif not t.cancelled():
                log.error("record %s:%s left uncommitted: %r", tp, record.offset, t.exception())

        task.add_done_callback(finished)

    def _apply_backpressure(self) -> None:
        """Pause every assigned partition while too many records are in flight."""
        assert self.consumer is not None
        in_flight = self._offsets.in_flight
        if not self._paused and in_flight >= self.settings.max_in_flight:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
        elif self._paused and in_flight <= self.settings.max_in_flight // 2:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False

    async def commit(self) -> None:
        """Commit every partition up to its oldest record still in flight."""
        assert self.consumer is not None
        offsets = {tp: o for tp, o in self._offsets.committable().items() if tp in self.consumer.assignment()}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # rebalance or broker outage: the records are redelivered, never lost
            log.warning("commit failed (%s); will retry", exc)
            return
        self._offsets.mark_committed(offsets)
        self.stats.commits += 1

    async def _drain_partitions(self, tps: Sequence[TopicPartition]) -> None:
        """Finish the records in flight on ``tps`` and commit them (on revoke and on shutdown)."""
        pending = [t for tp in tps for t in self._tasks.get(tp, ())]
        if pending:
            await asyncio.wait(pending)
        with contextlib.suppress(KafkaError):
            await self.commit()
        self._offsets.forget(tps)
        for tp in tps:
            self._tasks.pop(tp, None)

    # ----- the data path for one record -------------------------------------------------------

    async def _handle(self, record: ConsumerRecord) -> None:
        # The post's trace continues here (a fresh one when it has no traceparent header).
        with self.tracer.start_as_current_span(
            f"consume {record.topic}", context=tracing.context_from_headers(record.headers), kind=SpanKind.CONSUMER,
            attributes=tracing.consume_attributes(record, self.settings.consumer_group),
        ):
            await self._process(record)

    async def _process(self, record: ConsumerRecord) -> None:
        started = time.monotonic()
        assert self.publisher is not None
        try:
            outcome = await self._decide(record, started)
        except IngestError as error:
            await self._dead_letter(record, error)
            return
        except Exception as exc:  # a bug on one record must not stall its partition: dead-letter it, loudly
            log.exception("unexpected error on %s:%s:%s", record.topic, record.partition, record.offset)
            await self._dead_letter(record, IngestError(DeadLetterReason.INTERNAL_ERROR, repr(exc)))
            return
        decision = outcome.decision
        topic = self.settings.output_topic
        with self.stats.stages.timed("publish"), self.tracer.start_as_current_span(
            f"publish {topic}", kind=SpanKind.PRODUCER, attributes=tracing.publish_attributes(topic, decision.post_id),
        ) as publish_span:
            await self.publisher.decision(decision, tracing.traceparent_of(publish_span))
        self.stats.decisions[decision.source.value] += 1
        self.metrics.decided(decision, record)
        await self.policy_runtime.observe(decision.post_id, outcome.policy, outcome.verdict, decision.scores,
                                          outcome.post.post.metadata, outcome.matches, decision.model.version)
        get_current_span().set_attributes({
            "moderator.post_id": decision.post_id, "moderator.action": decision.action.value,
            "moderator.decision.source": decision.source.value,
            "moderator.cache.hit": decision.source is DecisionSource.CACHE,
        })
        if decision.action is Action.REVIEW and self.review is not None:
            # After publishing: the platform learns "review" at once even while Redis is down. The
            # offset waits for the queueing (retried until Redis is back), so a crash re-queues it.
            await self.review.enqueue(outcome.post, decision)

    async def _decide(self, record: ConsumerRecord, started: float) -> _Outcome:
        """validate → bank check → scores (cache or model) → policy → escalation → the decision."""
        with self.stats.stages.timed("validate"), self.tracer.start_as_current_span(tracing.VALIDATE):
            post = await validate_record(record.value, self.limits, self._fetch_client)
        policy = self.policies.select(post.post.metadata)
        matches, verdict = await self.policy_runtime.bank_check(
            post.image_bytes, post.post.metadata, policy, lambda data: decode_image(data, self.limits.image))
        scores, source = await self._scores(post) if verdict is None else ({}, DecisionSource.BANK)
        with self.tracer.start_as_current_span(tracing.POLICY) as policy_span:
            if verdict is None:
                verdict = evaluate(policy, scores, post.post.metadata, matches)
            policy_span.set_attributes({"moderator.policy.name": policy.name,
                                        "moderator.policy.version": policy.version,
                                        "moderator.action": verdict.action.value})
        verdict, model_info = await self.escalation.apply(policy, verdict, scores, post, self.classifier.info)
        decision = Decision(
            post_id=post.post.post_id, action=verdict.action, scores=scores, reasons=verdict.reasons,
            policy=PolicyRef(name=policy.name, version=policy.version), model=model_info,
            source=source, trace_id=tracing.trace_id_of(get_current_span()),
            latency_ms=round((time.monotonic() - started) * 1000, 2), decided_at=datetime.now(UTC),
        )
        return _Outcome(post, policy, verdict, matches, decision)

    async def _dead_letter(self, record: ConsumerRecord, error: IngestError) -> None:
        assert self.publisher is not None
        await self.publisher.dead_letter(record, error, post_id_of(record.value))
        self.stats.dead_letters[error.reason.value] = self.stats.dead_letters.get(error.reason.value, 0) + 1
        self.metrics.dead_lettered(error.reason.value)
        span = get_current_span()
        span.set_attribute("moderator.dead_letter.reason", error.reason.value)
        span.set_status(Status(StatusCode.ERROR, error.reason.value))

    async def _scores(self, post: ValidPost) -> tuple[Scores, DecisionSource]:
        """Scores from the cache, from an identical post already being scored, or from the model."""
        with self.tracer.start_as_current_span(tracing.CACHE_LOOKUP) as lookup:
            cached = await self.cache_batcher.submit(post.content_hash)
            shared = self._in_flight_scores.get(post.content_hash)
            lookup.set_attributes({"moderator.cache.hit": cached is not None,
                                   "moderator.cache.shared_in_flight": cached is None and shared is not None})
        self.metrics.cache_lookup(hit=cached is not None or shared is not None)
        if cached is not None:
            return cached, DecisionSource.CACHE
        if shared is not None:
            return await asyncio.shield(shared), DecisionSource.CACHE
        future: asyncio.Future[Scores] = asyncio.get_running_loop().create_future()
        self._in_flight_scores[post.content_hash] = future
        # Captured before scoring: a classifier swapped in meanwhile (policy reload) must not get these scores.
        model_version = self.classifier.info.version
        try:
            scores = await self._infer(post)
        except BaseException as exc:
            self._in_flight_scores.pop(post.content_hash, None)
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved here so waiter-less failures are not reported as unhandled
            else:
                future.cancel()
            raise
        future.set_result(scores)
        if self.cache is None:
            self._in_flight_scores.pop(post.content_hash, None)
        else:  # the write is off the decision's path; until it lands, identical posts share these scores
            store = asyncio.create_task(self._store(post.content_hash, scores, model_version, future))
            self._stores.add(store)
            store.add_done_callback(self._stores.discard)
        return scores, DecisionSource.MODEL

    async def _infer(self, post: ValidPost) -> Scores:
        """Decode (a bad image raises IngestError), then score in the next model batch."""
        with self.stats.stages.timed("decode"):
            model_input = await post.model_input(self.limits)
        with self.tracer.start_as_current_span(tracing.INFERENCE) as inference:
            try:
                return await self.model_batcher.submit((model_input, inference.get_span_context()))
            except Exception as exc:
                raise IngestError(DeadLetterReason.MODEL_ERROR, f"model failed on this post: {exc!r}") from exc

    # ----- batch functions (what the micro-batchers call) -------------------------------------

    async def _score_batch(self, items: Sequence[tuple[ModelInput, SpanContext]]) -> list[Scores | Exception]:
        """One model call for the batch, split on failure, on the model thread, traced as one span."""
        loop = asyncio.get_running_loop()
        inputs = [model_input for model_input, _ in items]
        # The batch's posts belong to many traces: the batch span starts its own and links to each post.
        with self.stats.stages.timed("model"), self.tracer.start_as_current_span(
            tracing.MODEL_BATCH, context=Context(), links=[Link(context) for _, context in items],
            attributes={"messaging.batch.message_count": len(items), "moderator.model.name": self.classifier.info.name,
                        "moderator.model.version": self.classifier.info.version},
        ) as span:
            started = time.perf_counter()
            results = await loop.run_in_executor(self._model_pool, score_splitting, self.classifier.score_batch,
                                                 inputs)
            self.metrics.model_batch(len(items), time.perf_counter() - started)
            span.set_attribute("moderator.model.failed_items", sum(isinstance(r, Exception) for r in results))
            return results

    async def _lookup_batch(self, hashes: Sequence[str]) -> list[Scores | None]:
        if self.cache is None:
            return [None] * len(hashes)
        try:
            with self.stats.stages.timed("cache_lookup"):
                return await self.cache.get_many(self.classifier.info.version, hashes)
        except RedisError as exc:  # degrade: keep deciding without the cache
            self.stats.cache_errors += 1
            log.warning("cache lookup failed, scoring without cache: %s", exc)
            return [None] * len(hashes)

    async def _write_batch(self, entries: Sequence[tuple[str, str, Scores]]) -> list[None]:
        assert self.cache is not None
        by_version: dict[str, dict[str, Scores]] = {}
        for model_version, content_hash, scores in entries:
            by_version.setdefault(model_version, {})[content_hash] = scores
        with self.stats.stages.timed("cache_write"):
            for model_version, batch in by_version.items():
                await self.cache.set_many(model_version, batch)
        return [None] * len(entries)

    async def _store(self, content_hash: str, scores: Scores, model_version: str,
                     in_flight: asyncio.Future[Scores]) -> None:
        try:
            await self.cache_writer.submit((model_version, content_hash, scores))
        except RedisError as exc:
            self.stats.cache_errors += 1
            log.warning("cache write failed: %s", exc)
        finally:
            if self._in_flight_scores.get(content_hash) is in_flight:
                del self._in_flight_scores[content_hash]
