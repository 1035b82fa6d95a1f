"""Publish: the decision to the decisions topic (or the record to the dead-letter topic), acknowledged."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from moderator.decisions.publisher import Publisher
from moderator.decisions.schema import Decision
from moderator.ingest.errors import IngestError
from moderator.ingest.fetch_failures import UndecodableRange
from moderator.ingest.schema import DeadLetterReason
from moderator.ingest.validate import post_id_of
from moderator.telemetry import tracing
from moderator.telemetry.instrument import Telemetry


class Publish:
    """Sends with retry until the broker acknowledges; counts decisions and dead letters."""

    def __init__(self, topic: str, telemetry: Telemetry) -> None:
        self.topic = topic
        self.telemetry = telemetry
        self.publisher: Publisher | None = None  # connected when the service starts

    def connect(self, publisher: Publisher) -> None:
        """Use ``publisher`` (the service's producer) from now on."""
        self.publisher = publisher

    async def __call__(self, decision: Decision, record: ConsumerRecord | None) -> None:
        """Publish the decision with a ``traceparent`` naming the publish span (``record``: the consumed
        post, for its end-to-end latency; None for a post from the HTTP API)."""
        assert self.publisher is not None
        with self.telemetry.stage("publish", span=f"publish {self.topic}", kind=SpanKind.PRODUCER,
                                  attributes=tracing.publish_attributes(self.topic, decision.post_id)) as span:
            await self.publisher.decision(decision, tracing.traceparent_of(span))
        self.telemetry.metrics.decided(decision.action.value, decision.source.value,
                                       [(r.category, r.action.value) for r in decision.reasons],
                                       record.timestamp if record is not None else 0)

    async def dead_letter(self, record: ConsumerRecord, error: IngestError) -> None:
        """Publish the record with its reason to the dead-letter topic."""
        assert self.publisher is not None
        await self.publisher.dead_letter(record, error, post_id_of(record.value))
        self.telemetry.metrics.dead_lettered(error.reason.value)
        span = get_current_span()
        span.set_attribute("moderator.dead_letter.reason", error.reason.value)
        span.set_status(Status(StatusCode.ERROR, error.reason.value))

    async def undecodable(self, skipped: UndecodableRange) -> None:
        """Publish one dead letter for an offset range the Kafka client could not decode."""
        assert self.publisher is not None
        await self.publisher.undecodable(skipped)
        self.telemetry.metrics.dead_lettered(DeadLetterReason.UNDECODABLE_BATCH.value)
