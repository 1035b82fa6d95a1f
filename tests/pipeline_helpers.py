"""Helpers for tests that run the service against the real broker: start/stop it, collect outputs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from moderator.broker import ensure_topics
from moderator.client import read_topic
from moderator.model.base import Classifier, ModelInfo, ModelInput
from moderator.service import ModerationService, build_service, running
from moderator.settings import Settings


@asynccontextmanager
async def running_service(settings: Settings, **kwargs: object) -> AsyncIterator[ModerationService]:
    """A service running in this event loop; stopped gracefully on exit."""
    await ensure_topics(settings)
    async with running(build_service(settings, **kwargs)) as service:  # type: ignore[arg-type]
        yield service


async def collect(settings: Settings, topic: str, count: int, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Read ``topic`` from the start until ``count`` records arrived (or the timeout)."""
    return [r async for r in read_topic(settings, topic, until_count=count, timeout_s=timeout_s)]


async def committed_and_log_offsets(settings: Settings, total: int) -> tuple[dict[int, int | None], dict[int, int]]:
    """The group's committed offset per input partition, and one past the last record in each.

    The log end is measured by reading the topic (``total`` records) rather than ListOffsets,
    which Tansu answers per batch rather than per record.
    """
    log_end: dict[int, int] = {}
    async for record in read_topic(settings, settings.input_topic, until_count=total, timeout_s=30):
        log_end[record.partition] = max(log_end.get(record.partition, 0), record.offset + 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition(settings.input_topic, p)) for p in log_end}
        return committed, log_end
    finally:
        await consumer.stop()


async def decided_ids(settings: Settings, wanted: set[str], timeout_s: float = 60.0) -> list[str]:
    """Post ids of the decisions topic, read until every wanted id appeared (or the timeout)."""
    seen: list[str] = []
    async for record in read_topic(settings, settings.output_topic, timeout_s=timeout_s):
        seen.append(record.key.decode())
        if wanted <= set(seen):
            break
    return seen


class WrappedClassifier:
    """A real classifier behind a hook: subclasses override ``score_batch`` to count, fail or corrupt."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        return self.inner.score_batch(items)
