"""The Kafka runner: consume, backpressure, offsets, commits and rebalance drain, around one handler.

All Kafka plumbing lives here, in one place (as in faststream, where the application object owns
the broker and handlers read as plain functions); the handler is ``moderator.pipeline.PostHandler``.

Each record becomes one task running ``handler(record)``; the runner only learns when it ended.
A partition is committed up to its oldest record still in flight, only once the handler
returned for it (its decision or dead letter acknowledged), so nothing is lost across crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from moderator.broker import make_consumer, start_with_retry
from moderator.ingest.fetch_failures import GuardedFetcher, UndecodableRange
from moderator.ingest.offsets import OffsetTracker
from moderator.settings import Settings
from moderator.telemetry.instrument import Telemetry

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord], Awaitable[None]]
# Publishes the dead letter of an offset range the client could not decode (moderator.ingest.fetch_failures).
UndecodableHandler = Callable[[UndecodableRange], Coroutine[None, None, None]]


class _Rebalance(ConsumerRebalanceListener):
    """Drains and commits partitions before they are taken away, so the new owner neither loses nor repeats them."""

    def __init__(self, runner: KafkaRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.runner.drain(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))


class KafkaRunner:
    """One consumer-group member driving ``handler`` with every record of the input topic."""

    def __init__(self, settings: Settings, handler: Handler, telemetry: Telemetry, stopping: asyncio.Event,
                 undecodable: UndecodableHandler) -> None:
        self.settings = settings
        self.handler = handler
        self.undecodable = undecodable
        self.telemetry = telemetry
        self.stopping = stopping
        self.offsets = OffsetTracker()
        self.consumer: AIOKafkaConsumer | None = None
        self.fetcher: GuardedFetcher | None = None
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._paused = False

    @property
    def in_flight(self) -> int:
        """Records consumed whose handler has not finished (or that are not yet committable)."""
        return self.offsets.in_flight

    async def start(self) -> None:
        """Join the consumer group (retrying until the broker answers or ``stopping`` is set)."""
        self.consumer = make_consumer(self.settings)
        self.consumer.subscribe([self.settings.input_topic], listener=_Rebalance(self))
        self.fetcher = GuardedFetcher(self.consumer, self.offsets.next_offset, self._skip_undecodable)
        await start_with_retry(self.consumer, self.settings, self.stopping)

    async def run(self) -> None:
        """Consume until ``stopping`` is set, then drain what is in flight and commit."""
        assert self.fetcher is not None
        last_commit = time.monotonic()
        try:
            while not self.stopping.is_set():
                batches = await self.fetcher.getmany(timeout_ms=100, max_records=self.settings.fetch_max_records)
                for tp, records in batches.items():
                    for record in records:
                        self._dispatch(tp, record)
                self._apply_backpressure()
                if (time.monotonic() - last_commit) * 1000 >= self.settings.commit_interval_ms:
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self.drain(list(self._tasks))

    async def close(self) -> None:
        """Leave the group."""
        if self.consumer is not None:
            await self.consumer.stop()

    def _dispatch(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        if self.telemetry.counts.first_consumed_at is None:
            self.telemetry.counts.first_consumed_at = time.time()
        self.telemetry.metrics.consumed.inc()
        self._track(tp, record.offset, self.handler(record), f"post {tp.partition}:{record.offset}")

    def _skip_undecodable(self, skipped: UndecodableRange) -> None:
        """Dead-letter a range the client cannot decode; its offsets commit once the letter is published."""
        self._track(skipped.tp, skipped.last, self.undecodable(skipped),
                    f"undecodable {skipped.tp.partition}:{skipped.first}-{skipped.last}")

    def _track(self, tp: TopicPartition, offset: int, work: Awaitable[None], name: str) -> None:
        """Run ``work`` for ``offset`` as a task; the offset becomes committable when it succeeds."""
        self.offsets.add(tp, offset)
        task = asyncio.ensure_future(work)
        task.set_name(name)
        tasks = self._tasks.setdefault(tp, set())
        tasks.add(task)

        def finished(t: asyncio.Future[None]) -> None:
            tasks.discard(t)
            if not t.cancelled() and t.exception() is None:
                self.offsets.done(tp, offset)
            elif not t.cancelled():
                log.error("record %s:%s left uncommitted: %r", tp, offset, t.exception())

        task.add_done_callback(finished)

    def _apply_backpressure(self) -> None:
        """Pause every assigned partition while too many records are in flight."""
        assert self.consumer is not None
        in_flight = self.offsets.in_flight
        if not self._paused and in_flight >= self.settings.max_in_flight:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
        elif self._paused and in_flight <= self.settings.max_in_flight // 2:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False

    async def commit(self) -> None:
        """Commit every partition up to its oldest record still in flight."""
        assert self.consumer is not None
        offsets = {tp: o for tp, o in self.offsets.committable().items() if tp in self.consumer.assignment()}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # rebalance or broker outage: the records are redelivered, never lost
            log.warning("commit failed (%s); will retry", exc)
            return
        self.offsets.mark_committed(offsets)
        self.telemetry.metrics.commits.inc()

    async def drain(self, tps: Sequence[TopicPartition]) -> None:
        """Finish the records in flight on ``tps`` and commit them (on revoke and on shutdown)."""
        pending = [t for tp in tps for t in self._tasks.get(tp, ())]
        if pending:
            await asyncio.wait(pending)
        with contextlib.suppress(KafkaError):
            await self.commit()
        self.offsets.forget(tps)
        for tp in tps:
            self._tasks.pop(tp, None)
