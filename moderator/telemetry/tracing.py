"""OpenTelemetry tracing: the tracer provider, W3C trace context over Kafka headers, span attributes.

A ``traceparent`` header on a post continues the producer's trace; a post without one starts a
fresh trace. The decision carries the trace id and a ``traceparent`` naming the publish span, so
the platform can continue the same trace downstream. Export is over OTLP, configured entirely by
the standard ``OTEL_*`` environment variables, and off when none of them asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from aiokafka.structs import ConsumerRecord
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, format_trace_id, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

KafkaHeaders = Sequence[tuple[str, bytes]]
Attributes = dict[str, AttributeValue]

TRACER_NAME = "moderator"
# Span names of the stages of one post (the test and docs/observability.md refer to these).
VALIDATE = "validate"
CACHE_LOOKUP = "cache lookup"
INFERENCE = "inference"
MODEL_BATCH = "model batch"
POLICY = "policy evaluate"

_PROPAGATOR = TraceContextTextMapPropagator()


class KafkaHeadersGetter(Getter[KafkaHeaders]):
    """Reads W3C trace-context fields from Kafka record headers (bytes values, case-insensitive keys)."""

    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        key = key.lower()
        values = [value.decode("latin-1") for name, value in carrier if value and name.lower() == key]
        return values or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = KafkaHeadersGetter()


def context_from_headers(headers: KafkaHeaders | None) -> Context:
    """The trace context a record's headers carry; an empty context (a new trace) when there is none."""
    return _PROPAGATOR.extract(list(headers or ()), context=Context(), getter=_GETTER)


def traceparent_of(span: Span) -> str:
    """The ``traceparent`` header value that makes ``span`` the parent of whatever reads it next."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=set_span_in_context(span, Context()))
    return carrier["traceparent"]


def trace_id_of(span: Span) -> str:
    """The span's trace id as 32 lowercase hex digits (as in ``traceparent``)."""
    return format_trace_id(span.get_span_context().trace_id)


def consume_attributes(record: ConsumerRecord, consumer_group: str) -> Attributes:
    """Messaging semantic-convention attributes of the span that processes one consumed record."""
    attributes: Attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "consume",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.destination.partition": record.partition,
        "messaging.kafka.message.offset": record.offset,
        "messaging.consumer.group.name": consumer_group,
        "messaging.message.body.size": len(record.value or b""),
    }
    if record.key is not None:
        attributes["messaging.kafka.message.key"] = record.key.decode("utf-8", "replace")
    return attributes


def publish_attributes(topic: str, key: str) -> Attributes:
    """Messaging semantic-convention attributes of the span that publishes a decision."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": key,
    }


def otlp_requested(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask for OTLP trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if "none" in exporters:
        return False
    endpoint_set = any(environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    return "otlp" in exporters or endpoint_set


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    # The exporters read their endpoint, headers, timeout and TLS settings from OTEL_* themselves.
    if protocol.strip().lower() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def records_spans(provider: TracerProvider) -> bool:
    """Whether ``provider`` records spans at all (not the one ``build_tracer_provider`` makes without export)."""
    return provider.sampler is not ALWAYS_OFF


def build_tracer_provider() -> TracerProvider:
    """A tracer provider for one service, exporting over OTLP when the OTEL_* variables ask for it.

    Endpoint, headers, protocol, sampling (``OTEL_TRACES_SAMPLER``) and resource attributes
    (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) follow the SDK's handling of those variables.
    """
    environ = os.environ
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": "moderator"})
    if not otlp_requested(environ):
        # Nothing would export the spans, so none are recorded (recording costs ~5 spans per post on
        # the hot path); trace ids are still created and propagated into decisions and headers.
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(environ)))
    return provider
