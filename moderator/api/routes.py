"""The API's operations: OpenAI-compatible ``POST /v1/moderations`` and the project's ``POST /v1/decide``.

Both decide posts with the service's own pipeline stages (``PostHandler.moderate``: validation,
hash banks, the score source's cache and single-flight, the model's micro-batches, policies and
escalation), minus Kafka, so a busy model serves the stream and the API in the same batches.
A request's ``traceparent`` continues the caller's trace; the trace id comes back in the
``X-Trace-Id`` header (and in the decision).

The gate calls them with the admitted request's bytes and sends the JSON bytes they answer: the
body is validated in one pydantic-core call and the answer serialised in one. FastAPI's per-request
layers (its middleware, routing, dependency solving, body solving and response re-validation) cost
the event loop about half of its time per request at 200 clients; FastAPI now serves only the docs,
with these operations described by ``openapi.OPERATIONS``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moderator.api.errors import ApiError, ingest_error, invalid_body
from moderator.api.inputs import InputError, PostInput, posts_of
from moderator.api.metrics import ApiMetrics
from moderator.api.schema import ErrorDetail, ModerationRequest, ModerationResponse
from moderator.api.taxonomy import moderation_result
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import Post
from moderator.pipeline import Decided, PostHandler
from moderator.review.tokens import TokenRecord
from moderator.telemetry import tracing

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_FIELDS = (b"traceparent", b"tracestate")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class DecideQuery(BaseModel):
    """The query of ``POST /v1/decide`` (unknown parameters are ignored)."""

    model_config = ConfigDict(extra="ignore")

    publish: bool = Field(False, description="Also publish the decision to the decisions topic (and send it to "
                                             "review when its action is review).")


@dataclass(frozen=True)
class ApiRequest:
    """A request the gate admitted: its body, raw headers (lower-case names), query string and verified key."""

    body: bytes
    headers: Sequence[tuple[bytes, bytes]]
    query: bytes
    key: TokenRecord


@dataclass(frozen=True)
class Answer:
    """A successful answer: its JSON and the trace it was decided in (the ``X-Trace-Id`` header)."""

    body: bytes
    trace_id: str


Operation = Callable[[ApiRequest], Awaitable[Answer]]


def parse_body(model: type[M], body: bytes) -> M:
    """``body`` validated as ``model`` straight from its bytes; an ``ApiError`` (400) otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from exc


def _parse_query(query: bytes) -> DecideQuery:
    try:
        return DecideQuery.model_validate(dict(parse_qsl(query.decode("latin-1"))))
    except ValidationError as exc:
        raise invalid_body(exc) from exc


async def _all_settled(jobs: Sequence[Awaitable[T]]) -> list[T]:
    """Await every job, then raise the first failure.

    Nothing is cancelled: a post scored for this request may be shared (single-flight) with a
    post of the stream, which must get its scores whatever happens to this request.
    """
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Moderation:
    """The operations, over the service's pipeline, the API's metrics and its input limit."""

    pipeline: PostHandler
    metrics: ApiMetrics
    max_inputs: int

    async def moderations(self, request: ApiRequest) -> Answer:
        """One result per string, or one for a whole array of parts, in omni-moderation's categories."""
        body = parse_body(ModerationRequest, request.body)
        # An opaque id, not a secret: random bits without a getrandom() system call per request.
        request_id = f"modr-{random.getrandbits(128):032x}"
        try:
            posts = posts_of(body, request_id, request.key.subject, self.max_inputs)
        except InputError as exc:
            raise ApiError(400, ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.param,
                                            code="invalid_input")) from exc
        single = len(posts) == 1

        async def work() -> bytes:
            decided = await _all_settled([self._decide(post, "input" if single else f"input[{index}]", "moderations")
                                          for index, post in enumerate(posts)])
            results = [moderation_result(d.decision, d.policy, p.input_types)
                       for d, p in zip(decided, posts, strict=True)]
            answer = ModerationResponse(id=request_id, model=self.pipeline.infer.classifier.info.name, results=results)
            return answer.model_dump_json().encode()

        return await self._traced(request, "POST /v1/moderations", work)

    async def decide(self, request: ApiRequest) -> Answer:
        """The ``Decision`` the stream would publish for this post; published only with ``publish=true``."""
        publish = _parse_query(request.query).publish
        post = parse_body(Post, request.body)  # names the field; the pipeline then applies the stream's limits

        async def work() -> bytes:
            decided = await self._decide(PostInput(post.post_id, request.body, ()), "post", "decide")
            if publish:
                await self.pipeline.deliver(decided)
            return decided.decision.model_dump_json().encode()

        return await self._traced(request, "POST /v1/decide", work)

    async def _traced(self, request: ApiRequest, name: str, work: Callable[[], Awaitable[bytes]]) -> Answer:
        """Run ``work`` in a server span continuing the caller's ``traceparent``."""
        carrier = {name.decode(): value.decode("latin-1") for name, value in request.headers if name in _TRACE_FIELDS}
        parent = _PROPAGATOR.extract(carrier, context=Context()) if carrier else Context()
        with self.pipeline.telemetry.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            return Answer(await work(), tracing.trace_id_of(span))

    async def _decide(self, post: PostInput, param: str, endpoint: str) -> Decided:
        """One post through the pipeline stages (no publishing); a rejection becomes an ``ApiError``."""
        # Like the stream's stages: a span of its own only while spans are recorded.
        with self.pipeline.telemetry.span("decide", attributes={"moderator.post_id": post.post_id}):
            try:
                decided = await self.pipeline.moderate(post.value)
            except IngestError as error:
                raise ingest_error(error, param) from error
        self.metrics.decided(endpoint, decided.decision)
        return decided

    def operations(self) -> dict[str, Operation]:
        """The ``POST`` operations by path."""
        return {"/v1/moderations": self.moderations, "/v1/decide": self.decide}
