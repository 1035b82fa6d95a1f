"""The platform's side of the topics: publish posts, read decisions and dead letters.

Used by the demo, the benchmarks and the tests; a platform integrating moderator would do the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from moderator.settings import Settings

RawRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


async def produce(settings: Settings, records: Iterable[RawRecord], topic: str | None = None) -> int:
    """Publish raw records to the posts topic (or ``topic``) and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                max_request_size=settings.max_message_bytes + 1024)
    try:  # started inside the try: cancelled mid-start, the producer is still closed
        await producer.start()
        futures = [await producer.send(topic or settings.input_topic, value=v, key=k, headers=h)
                   for k, v, h in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def post_record(post: dict[str, object], traceparent: str | None = None) -> RawRecord:
    """A post as a Kafka record keyed by its post_id."""
    key = str(post.get("post_id", "")).encode() or None
    headers = [("traceparent", traceparent.encode())] if traceparent else []
    return key, orjson.dumps(post), headers


async def read_topic(settings: Settings, topic: str, *, until_count: int | None = None,
                     timeout_s: float = 30.0, idle_s: float | None = None) -> AsyncIterator[ConsumerRecord]:
    """Yield records of ``topic`` from the beginning (no consumer group) until a count, idle gap or timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    seen = 0
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:  # started inside the try: cancelled mid-start, the consumer is still closed
        await consumer.start()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    seen += 1
                    last = time.monotonic()
                    yield record
            if until_count is not None and seen >= until_count:
                return
            if idle_s is not None and time.monotonic() - last > idle_s:
                return
    finally:
        await consumer.stop()
