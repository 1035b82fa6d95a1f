"""Tracing across Kafka: a post's traceparent continues through every stage into its decision's header."""

from __future__ import annotations

import http.server
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import ClassVar

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from moderator.client import post_record, produce
from moderator.decisions.schema import Decision
from moderator.settings import Settings
from moderator.telemetry import tracing
from moderator.telemetry.logs import JsonFormatter, TextFormatter
from tests.pipeline_helpers import collect, running_service

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
STAGES = {tracing.VALIDATE, tracing.CACHE_LOOKUP, tracing.INFERENCE, tracing.POLICY}


def _text_posts(count: int, prefix: str) -> list[dict[str, object]]:
    """Text-only posts whose content no other test produced (so they miss the shared cache)."""
    run = uuid.uuid4().hex
    return [{"post_id": f"{prefix}-{i}", "user_id": "u-1", "text": f"caption {i} of run {run}"} for i in range(count)]


async def test_a_posts_trace_continues_through_every_stage_and_into_its_decision(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_wait_ms": 200.0})  # let the posts share a model batch
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    posts = _text_posts(8, "trace")
    traced_id, untraced_id, garbled_id = (str(p["post_id"]) for p in posts[:3])
    records = ([post_record(posts[0], f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"), post_record(posts[1]),
                post_record(posts[2], "00-not-a-trace-context")] + [post_record(p) for p in posts[3:]])

    async with running_service(settings, tracer_provider=provider):
        await produce(settings, records)
        decision_records = await collect(settings, settings.output_topic, len(posts))
        input_records = await collect(settings, settings.input_topic, len(posts))
    spans = exporter.get_finished_spans()

    decisions = {r.key.decode(): (Decision.model_validate_json(r.value), dict(r.headers)) for r in decision_records}
    assert set(decisions) == {p["post_id"] for p in posts}
    in_trace = [s for s in spans if format_trace_id(s.context.trace_id) == TRACE_ID]
    by_name = {s.name: s for s in in_trace}
    consume = by_name[f"consume {settings.input_topic}"]
    publish = by_name[f"publish {settings.output_topic}"]
    assert set(by_name) >= STAGES, f"every stage is traced under the post's trace, got {sorted(by_name)}"

    assert consume.kind is SpanKind.CONSUMER and consume.parent is not None and consume.parent.is_remote
    assert format_span_id(consume.parent.span_id) == PARENT_SPAN_ID, "the consume span continues the producer's span"
    for span in in_trace:
        if span is not consume:
            assert span.parent is not None and span.parent.span_id == consume.context.span_id, span.name
    source = next(r for r in input_records if r.key.decode() == traced_id)
    assert consume.attributes is not None
    assert consume.attributes["messaging.system"] == "kafka"
    assert consume.attributes["messaging.destination.name"] == settings.input_topic
    assert consume.attributes["messaging.kafka.destination.partition"] == source.partition
    assert consume.attributes["messaging.kafka.message.offset"] == source.offset
    assert consume.attributes["moderator.cache.hit"] is False
    assert by_name[tracing.CACHE_LOOKUP].attributes == {"moderator.cache.hit": False,
                                                        "moderator.cache.shared_in_flight": False}
    assert publish.kind is SpanKind.PRODUCER and publish.attributes is not None
    assert publish.attributes["messaging.destination.name"] == settings.output_topic

    decision, headers = decisions[traced_id]
    assert decision.trace_id == TRACE_ID
    assert consume.attributes["moderator.action"] == decision.action.value
    assert by_name[tracing.POLICY].attributes["moderator.action"] == decision.action.value  # type: ignore[index]
    assert headers["traceparent"].decode() == f"00-{TRACE_ID}-{format_span_id(publish.context.span_id)}-01", \
        "the decision's traceparent names the publish span, continuing the post's trace"

    _assert_batch_spans_link_each_post_once(spans, expected_posts=len(posts))
    for post_id in (untraced_id, garbled_id):  # no (valid) traceparent: a fresh trace per post
        fresh, fresh_headers = decisions[post_id]
        assert fresh.trace_id is not None and fresh.trace_id != TRACE_ID
        assert fresh_headers["traceparent"].decode().split("-")[1] == fresh.trace_id
        root = next(s for s in spans if s.name.startswith("consume ") and format_trace_id(s.context.trace_id)
                    == fresh.trace_id)
        assert root.parent is None
    assert decisions[untraced_id][0].trace_id != decisions[garbled_id][0].trace_id


def _assert_batch_spans_link_each_post_once(spans: tuple[ReadableSpan, ...], expected_posts: int) -> None:
    """Each model batch is one span, in a trace of its own, linked to the inference span of every post in it."""
    inference = {s.context.span_id: s for s in spans if s.name == tracing.INFERENCE}
    batches = [s for s in spans if s.name == tracing.MODEL_BATCH]
    assert len(inference) == expected_posts
    linked: list[int] = []
    for batch in batches:
        assert batch.parent is None and batch.attributes is not None
        assert batch.attributes["messaging.batch.message_count"] == len(batch.links)
        for link in batch.links:
            post_span = inference[link.context.span_id]
            assert link.context.trace_id == post_span.context.trace_id != batch.context.trace_id
            linked.append(link.context.span_id)
    assert sorted(linked) == sorted(inference), "every post's inference span is linked from exactly one batch"
    assert max(len(b.links) for b in batches) > 1, "posts produced together were scored in a shared batch"


class _Collector(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps the bodies POSTed to /v1/traces."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def otlp_collector() -> Iterator[tuple[str, list[bytes]]]:
    handler = type("Handler", (_Collector,), {"bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_spans_are_exported_over_otlp_when_the_standard_variables_ask(otlp_collector: tuple[str, list[bytes]],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, bodies = otlp_collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "mod-x")
    provider = tracing.build_tracer_provider()
    with provider.get_tracer("test").start_as_current_span("exported"):
        pass
    assert provider.force_flush(5000)
    provider.shutdown()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(bodies))
    names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    services = {a.value.string_value for rs in request.resource_spans for a in rs.resource.attributes
                if a.key == "service.name"}
    assert names == ["exported"] and services == {"mod-x"}


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
])
def test_otlp_export_is_off_unless_otel_variables_ask_for_it(environ: dict[str, str], expected: bool) -> None:
    assert tracing.otlp_requested(environ) is expected


def test_log_lines_carry_the_current_trace_id() -> None:
    provider = TracerProvider()
    record = logging.LogRecord("moderator.test", logging.WARNING, __file__, 1, "slow %s", ("redis",), None)
    record.partition = 2
    assert "trace_id" not in orjson.loads(JsonFormatter().format(record))
    with provider.get_tracer("test").start_as_current_span("work") as span:
        line = orjson.loads(JsonFormatter().format(record))
        text = TextFormatter().format(record)
    trace_id = format_trace_id(span.get_span_context().trace_id)
    assert line["trace_id"] == trace_id and line["span_id"] == format_span_id(span.get_span_context().span_id)
    assert line["message"] == "slow redis" and line["level"] == "WARNING" and line["partition"] == 2
    assert text.endswith(f"slow redis trace={trace_id}")
