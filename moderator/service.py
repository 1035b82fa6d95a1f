"""The moderation service: one application object with a start/run/stop/close lifecycle.

It wires two parts and owns their shared resources (producer, Redis, the ops server, the policy
watcher): the Kafka runner (consume, backpressure, offsets, commits, rebalances) and the handler it
drives, the per-post pipeline (``moderator.pipeline``). A record handed to the handler never
comes back to the runner except as "done".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from moderator.api.server import serving_api
from moderator.broker import ensure_topics, make_producer, start_with_retry
from moderator.decisions.publisher import Publisher
from moderator.decisions.schema import DecisionSource
from moderator.model.base import Classifier, HeadSpec
from moderator.model.loader import load_classifier
from moderator.pipeline import PostHandler, ReviewSink
from moderator.policy.loader import load_policy_set
from moderator.policy.store import PolicyStore
from moderator.reload import PolicyReloader
from moderator.review.queue import RedisReviewQueue
from moderator.runner import KafkaRunner
from moderator.settings import Settings
from moderator.telemetry.health import Readiness, check_readiness
from moderator.telemetry.instrument import Counts, Telemetry
from moderator.telemetry.server import OpsServer, ops_app

log = logging.getLogger(__name__)


class ModerationService:
    """One consumer-group member: the Kafka runner driving the per-post pipeline."""

    def __init__(self, settings: Settings, classifier: Classifier, policies: PolicyStore,
                 redis: Redis | None = None, review: ReviewSink | None = None,
                 tracer_provider: TracerProvider | None = None,
                 classifier_factory: Callable[[HeadSpec], Classifier] | None = None) -> None:
        self.settings = settings
        self.policies = policies
        self.redis = redis
        self.classifier_factory = classifier_factory
        self.stopping = asyncio.Event()
        self.telemetry = Telemetry([s.value for s in DecisionSource], tracer_provider)
        self.pipeline = PostHandler.build(settings, classifier, policies, redis, review, self.telemetry)
        self.runner = KafkaRunner(settings, self.pipeline, self.telemetry, self.stopping,
                                  self.pipeline.publish.undecodable)
        # Hot reload, rebuilding the classifier when categories or prompts change.
        self.reloader = PolicyReloader(policies, settings.policy_dir,
                                       self._rebuild_classifier if classifier_factory is not None else None)
        self.ops: OpsServer | None = None
        self.consuming = False
        self.producer: AIOKafkaProducer | None = None
        self._stop_watch = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @property
    def classifier(self) -> Classifier:
        """The classifier serving now (a policy reload may swap it)."""
        return self.pipeline.infer.classifier

    @property
    def counts(self) -> Counts:
        """The service's counters (consumed, decisions by source, dead letters by reason, cache errors, commits)."""
        return self.telemetry.counts

    async def start(self) -> None:
        """Serve /metrics, /health, /ready (if configured), connect to the broker (retrying) and join the group."""
        if self.settings.metrics_port is not None:
            app = ops_app(self.telemetry.metrics, self.readiness, self._refresh_gauges)
            self.ops = OpsServer(app, self.settings.metrics_host, self.settings.metrics_port)
            await self.ops.start()
        if self.settings.create_topics:
            await ensure_topics(self.settings)
        self.producer = make_producer(self.settings)
        await start_with_retry(self.producer, self.settings, self.stopping)
        self.pipeline.publish.connect(Publisher(self.producer, self.settings.output_topic, self.settings.dlq_topic,
                                                self.settings.kafka_retry_backoff_max_s, self.stopping))
        self.pipeline.observe.connect(self.producer)
        await self.pipeline.start()
        if self.settings.policy_watch and self._watch is None:
            self._watch = asyncio.create_task(self.reloader.watch(self._stop_watch), name="policy-watch")
        await self.runner.start()
        self.consuming = True

    async def run(self) -> None:
        """Consume until ``stop()`` is called, then drain what is in flight and commit."""
        await self.runner.run()

    async def stop(self) -> None:
        """Ask ``run()`` to finish; safe to call from a signal handler."""
        self.stopping.set()

    async def close(self) -> None:
        """Release clients and workers (after ``run()`` returned)."""
        self._stop_watch.set()
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._watch, 5.0)
        await self.pipeline.close()
        await self.runner.close()
        if self.producer is not None:
            await self.producer.stop()
        if self.ops is not None:
            await self.ops.stop()
        self.telemetry.tracer_provider.force_flush(timeout_millis=5000)

    def serving_api(self, port: int) -> contextlib.AbstractAsyncContextManager[OpsServer]:
        """The HTTP API over this service's pipeline on ``port``, for a ``with`` block (``moderator.api``)."""
        return serving_api(self.pipeline, self.redis, self.telemetry.metrics.registry, self.settings, port)

    async def readiness(self) -> Readiness:
        """Whether this instance can take traffic: broker and Redis reachable, model loaded, not draining."""
        return await check_readiness(self.runner.consumer if self.consuming else None, self.redis, self.classifier,
                                     self.stopping.is_set())

    async def _rebuild_classifier(self, heads: HeadSpec) -> None:
        """Build a classifier for new categories/prompts off the event loop, then swap it in (policy reload)."""
        assert self.classifier_factory is not None
        self.pipeline.infer.classifier = await asyncio.to_thread(self.classifier_factory, heads)

    async def _refresh_gauges(self) -> None:
        await self.telemetry.metrics.refresh_lag(self.runner.consumer if self.consuming else None,
                                                 self.runner.in_flight)


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
        service.pipeline.review.sink = RedisReviewQueue(redis, settings, stopping=service.stopping)
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
        async with contextlib.AsyncExitStack() as api:
            if service.settings.api_port is not None:
                server = await api.enter_async_context(service.serving_api(service.settings.api_port))
                log.info("moderation API on %s:%d", service.settings.api_host, server.port)
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
