"""The API's routes: OpenAI-compatible ``/v1/moderations`` and the project's ``/v1/decide``.

Both decide posts with the service's own pipeline stages (``PostHandler.moderate``: validation,
hash banks, the score source's cache and single-flight, the model's micro-batches, policies and
escalation), minus Kafka, so a busy model serves the stream and the API in the same batches.
A request's ``traceparent`` continues the caller's trace; the trace id comes back in the
``X-Trace-Id`` header (and in the decision).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from moderator.api.errors import ApiError, ingest_error
from moderator.api.inputs import InputError, PostInput, posts_of, record_bytes
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
_PROPAGATOR = TraceContextTextMapPropagator()
T = TypeVar("T")
router = APIRouter(prefix="/v1")


@dataclass(frozen=True)
class Moderation:
    """What the routes decide with: the service's pipeline, the API's metrics and its input limit."""

    pipeline: PostHandler
    metrics: ApiMetrics
    max_inputs: int

    async def traced(self, request: Request, response: Response, name: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` in a server span continuing the caller's ``traceparent``; its trace id goes in the answer."""
        parent: Context = _PROPAGATOR.extract(dict(request.headers), context=Context())
        with self.pipeline.telemetry.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            response.headers[TRACE_HEADER] = tracing.trace_id_of(span)
            try:
                return await work()
            except ApiError:
                raise
            except Exception as exc:  # a bug must answer 500, not drop the connection
                log.exception("API request failed")
                raise ApiError(500, ErrorDetail(message="internal error", type="server_error",
                                                code="internal_error")) from exc

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


_bearer = HTTPBearer(auto_error=False, description="An API key from `moderator api-key create NAME`.")


async def _caller(request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> TokenRecord:
    """The key the gate verified (the dependency also documents the scheme in OpenAPI)."""
    key: TokenRecord = request.state.api_key
    return key


async def _moderation(request: Request) -> Moderation:
    # Dependencies are coroutines: FastAPI would run a plain function on a worker thread per request.
    moderation: Moderation = request.app.state.moderation
    return moderation


@router.post("/moderations", response_model=ModerationResponse,
             summary="Classify text and images (OpenAI omni-moderation compatible)")
async def moderations(body: ModerationRequest, request: Request, response: Response,
                      key: TokenRecord = Depends(_caller), api: Moderation = Depends(_moderation)) -> ModerationResponse:
    """One result per string, or one for a whole array of parts, in omni-moderation's categories."""
    request_id = f"modr-{uuid.uuid4().hex}"
    try:
        posts = posts_of(body, request_id, key.subject, api.max_inputs)
    except InputError as exc:
        raise ApiError(400, ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.param,
                                        code="invalid_input")) from exc
    single = len(posts) == 1

    async def work() -> ModerationResponse:
        decided = await _all_settled([api.decide(post, "input" if single else f"input[{index}]", "moderations")
                                      for index, post in enumerate(posts)])
        results = [moderation_result(d.decision, d.policy, p.input_types) for d, p in zip(decided, posts, strict=True)]
        return ModerationResponse(id=request_id, model=api.pipeline.infer.classifier.info.name, results=results)

    return await api.traced(request, response, "POST /v1/moderations", work)


@router.post("/decide", response_model=Decision, summary="The project's decision for one post",
             dependencies=[Depends(_caller)])
async def decide_post(post: Post, request: Request, response: Response, api: Moderation = Depends(_moderation),
                      publish: bool = Query(False, description="Also publish the decision to the decisions topic "
                                            "(and send it to review when its action is review).")) -> Decision:
    """The ``Decision`` the stream would publish for this post; published only with ``publish=true``."""
    try:
        value = record_bytes(post.model_dump(mode="json", exclude_none=True), "post")
    except InputError as exc:
        raise ApiError(400, ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.param,
                                        code="invalid_input")) from exc

    async def work() -> Decision:
        decided = await api.decide(PostInput(post.post_id, value, ()), "post", "decide")
        if publish:
            await api.pipeline.deliver(decided)
        return decided.decision

    return await api.traced(request, response, "POST /v1/decide", work)
