"""Kafka plumbing in one place: clients from settings, topic creation, publishing with retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from moderator.retry import with_backoff
from moderator.settings import Settings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; idempotent only where the broker supports it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=settings.kafka_client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=5,  # lets concurrent per-post publishes share one produce request
        max_batch_size=settings.kafka_producer_batch_bytes,
        request_timeout_ms=15_000,
    )


def make_consumer(settings: Settings, *topics: str, group_id: str | None = None) -> AIOKafkaConsumer:
    """A group consumer with manual commits: offsets move only after the decision is published."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=settings.kafka_client_id,
        group_id=group_id if group_id is not None else settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.kafka_isolation_level,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        # How long the broker may hold a fetch waiting for data: this is latency at low load.
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.max_message_bytes,
        fetch_max_bytes=max(settings.max_message_bytes, 52_428_800),
    )


async def ensure_topics(settings: Settings) -> None:
    """Create the input, output, dead-letter (and shadow-disagreement, if set) topics if they do not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=settings.kafka_client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.input_topic, settings.output_topic, settings.dlq_topic, settings.shadow_topic]
        missing = [NewTopic(t, settings.topic_partitions, 1) for t in wanted if t and t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica created it first
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


def _is_set(stopping: asyncio.Event | None) -> Callable[[], bool]:
    return lambda: stopping is not None and stopping.is_set()


async def start_with_retry(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient,
                           settings: Settings, stopping: asyncio.Event | None = None) -> None:
    """Start a client, retrying with exponential backoff while the broker is unreachable."""
    await with_backoff(client.start, KafkaError, "connecting to the broker", _is_set(stopping),
                       first_delay_s=0.2, max_delay_s=settings.kafka_retry_backoff_max_s)


async def send_with_retry(producer: AIOKafkaProducer, topic: str, value: bytes, key: bytes | None,
                          headers: Headers, max_backoff_s: float, stopping: asyncio.Event | None = None) -> None:
    """Publish one message and wait for the broker's acknowledgement, retrying transient failures.

    Gives up only when the service is stopping; the caller then leaves the offset uncommitted so the
    record is redelivered (at-least-once).
    """
    await with_backoff(lambda: producer.send_and_wait(topic, value=value, key=key, headers=headers), KafkaError,
                       f"publish to {topic}", _is_set(stopping), max_delay_s=max_backoff_s)
