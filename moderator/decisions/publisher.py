"""Publish decisions and dead letters, keyed by post id, waiting for the broker's acknowledgement."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from moderator.broker import send_with_retry
from moderator.decisions.schema import Decision
from moderator.ingest.errors import IngestError
from moderator.ingest.fetch_failures import UndecodableRange
from moderator.ingest.schema import DeadLetter, DeadLetterReason


class Publisher:
    """Writes to the decisions and dead-letter topics with retry until acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, output_topic: str, dlq_topic: str, max_backoff_s: float,
                 stopping: asyncio.Event | None = None) -> None:
        self.producer = producer
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.max_backoff_s = max_backoff_s
        self.stopping = stopping

    async def decision(self, decision: Decision, traceparent: str) -> None:
        """Publish a decision with its traceparent header."""
        await send_with_retry(
            self.producer, self.output_topic, decision.model_dump_json().encode(), decision.post_id.encode(),
            [("traceparent", traceparent.encode())], self.max_backoff_s, self.stopping,
        )

    async def dead_letter(self, record: ConsumerRecord, error: IngestError, post_id: str | None) -> DeadLetter:
        """Publish a dead letter carrying the original bytes and headers of the record."""
        letter = DeadLetter(
            reason=error.reason, detail=error.detail[:2000], topic=record.topic, partition=record.partition,
            offset=record.offset, post_id=post_id, payload_b64=base64.b64encode(record.value or b"").decode(),
            failed_at=datetime.now(UTC),
        )
        await send_with_retry(
            self.producer, self.dlq_topic, letter.model_dump_json().encode(),
            post_id.encode() if post_id else record.key, list(record.headers or ()), self.max_backoff_s, self.stopping,
        )
        return letter

    async def undecodable(self, skipped: UndecodableRange) -> DeadLetter:
        """Publish one dead letter for a range of offsets the client could not decode (no payload)."""
        letter = DeadLetter(
            reason=DeadLetterReason.UNDECODABLE_BATCH, detail=skipped.error[:2000], topic=skipped.tp.topic,
            partition=skipped.tp.partition, offset=skipped.first, last_offset=skipped.last, payload_b64="",
            failed_at=datetime.now(UTC),
        )
        await send_with_retry(self.producer, self.dlq_topic, letter.model_dump_json().encode(), None, [],
                              self.max_backoff_s, self.stopping)
        return letter
