"""The API's routes: OpenAI-compatible ``/v1/moderations`` and the project's ``/v1/decide``.

Both decide posts with the service's own pipeline stages (``PostHandler.moderate``: validation,
hash banks, the score source's cache and single-flight, the model's micro-batches, policies and
escalation), minus Kafka, so a busy model serves the stream and the API in the same batches.
A request's ``traceparent`` continues the caller's trace; the trace id comes back in the
``X-Trace-Id`` header (and in the decision).

The routes take the raw request and answer JSON bytes: the body is validated from its bytes in one
pydantic-core call and the answer serialised in one, instead of FastAPI's per-field body solving,
dependency resolution and response re-validation (a third of the event loop's time per request at
200 clients). Their schemas are documented by ``openapi.document_bodies`` and ``response_model``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Query, Request, Response
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ValidationError

from moderator.api.errors import ApiError, ingest_error, invalid_body
from moderator.api.inputs import InputError, PostInput, posts_of
from moderator.api.metrics import ApiMetrics
from moderator.api.schema import ErrorDetail, ModerationRequest, ModerationResponse
from moderator.api.taxonomy import moderation_result
from moderator.decisions.schema import Decision
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import Post
from moderator.pipeline import Decided, PostHandler
from moderator.review.tokens import TokenRecord
from moderator.telemetry import tracing

log = logging.getLogger(__name__)

TRACE_HEADER = "X-Trace-Id"
JSON = "application/json"
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_FIELDS = ("traceparent", "tracestate")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
router = APIRouter(prefix="/v1")


def parse_body(model: type[M], body: bytes) -> M:
    """``body`` validated as ``model`` straight from its bytes; an ``ApiError`` (400) otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from exc


@dataclass(frozen=True)
class Moderation:
    """What the routes decide with: the service's pipeline, the API's metrics and its input limit."""

    pipeline: PostHandler
    metrics: ApiMetrics
    max_inputs: int

    async def traced(self, request: Request, name: str, work: Callable[[], Awaitable[bytes]]) -> Response:
        """Run ``work`` in a server span continuing the caller's ``traceparent``; answer its JSON with the trace id."""
        headers = request.headers
        carrier = {field: headers[field] for field in _TRACE_FIELDS if field in headers}
        parent = _PROPAGATOR.extract(carrier, context=Context()) if carrier else Context()
        with self.pipeline.telemetry.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            trace_id = tracing.trace_id_of(span)
            try:
                body = await work()
            except ApiError:
                raise
            except Exception as exc:  # a bug must answer 500, not drop the connection
                log.exception("API request failed")
                raise ApiError(500, ErrorDetail(message="internal error", type="server_error",
                                                code="internal_error")) from exc
        return Response(body, media_type=JSON, headers={TRACE_HEADER: trace_id})

    async def decide(self, post: PostInput, param: str, endpoint: str) -> Decided:
        """One post through the pipeline stages (no publishing); a rejection becomes an ``ApiError``."""
        with self.pipeline.telemetry.tracer.start_as_current_span("decide",
                                                                  attributes={"moderator.post_id": post.post_id}):
            try:
                decided = await self.pipeline.moderate(post.value)
            except IngestError as error:
                raise ingest_error(error, param) from error
        self.metrics.decided(endpoint, decided.decision)
        return decided


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


def _context(request: Request) -> tuple[Moderation, TokenRecord]:
    """What the app was built with, and the key the gate verified."""
    moderation: Moderation = request.app.state.moderation
    key: TokenRecord = request.state.api_key
    return moderation, key


@router.post("/moderations", response_model=ModerationResponse,
             summary="Classify text and images (OpenAI omni-moderation compatible)")
async def moderations(request: Request) -> Response:
    """One result per string, or one for a whole array of parts, in omni-moderation's categories."""
    api, key = _context(request)
    body = parse_body(ModerationRequest, await request.body())
    # An opaque id (not a secret): random bits, without a getrandom() system call per request.
    request_id = f"modr-{random.getrandbits(128):032x}"
    try:
        posts = posts_of(body, request_id, key.subject, api.max_inputs)
    except InputError as exc:
        raise ApiError(400, ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.param,
                                        code="invalid_input")) from exc
    single = len(posts) == 1

    async def work() -> bytes:
        decided = await _all_settled([api.decide(post, "input" if single else f"input[{index}]", "moderations")
                                      for index, post in enumerate(posts)])
        results = [moderation_result(d.decision, d.policy, p.input_types) for d, p in zip(decided, posts, strict=True)]
        answer = ModerationResponse(id=request_id, model=api.pipeline.infer.classifier.info.name, results=results)
        return answer.model_dump_json().encode()

    return await api.traced(request, "POST /v1/moderations", work)


@router.post("/decide", response_model=Decision, summary="The project's decision for one post")
async def decide_post(request: Request, publish: bool = Query(False, description="Also publish the decision to the "
                      "decisions topic (and send it to review when its action is review).")) -> Response:
    """The ``Decision`` the stream would publish for this post; published only with ``publish=true``."""
    api, _ = _context(request)
    raw = await request.body()
    post = parse_body(Post, raw)  # the schema's answer names the field; the pipeline then applies the stream's limits

    async def work() -> bytes:
        decided = await api.decide(PostInput(post.post_id, raw, ()), "post", "decide")
        if publish:
            await api.pipeline.deliver(decided)
        return decided.decision.model_dump_json().encode()

    return await api.traced(request, "POST /v1/decide", work)
