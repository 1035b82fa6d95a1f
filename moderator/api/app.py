"""The synchronous moderation API: OpenAI-compatible ``/v1/moderations`` and the project's ``/v1/decide``.

Both decide posts with the service's own pipeline stages (``PostHandler.moderate``: validation,
hash banks, the score source's cache and single-flight, the model's micro-batches, policies and
escalation), minus Kafka, so a busy model serves the stream and the API in the same batches. A request's ``traceparent`` continues the caller's trace; the trace id comes back in
the ``X-Trace-Id`` header (and in the decision).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import orjson
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from moderator.api.gate import Gate
from moderator.api.inputs import InputError, PostInput, posts_of
from moderator.api.keys import ApiKey, ApiKeyStore
from moderator.api.metrics import ApiMetrics
from moderator.api.schema import ErrorDetail, ErrorResponse, ModerationRequest, ModerationResponse
from moderator.api.taxonomy import moderation_result
from moderator.decisions.schema import Decision
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason, Post
from moderator.pipeline import Decided, PostHandler
from moderator.telemetry import tracing

log = logging.getLogger(__name__)

TRACE_HEADER = "X-Trace-Id"
_PROPAGATOR = TraceContextTextMapPropagator()
_SERVER_FAULTS = frozenset({DeadLetterReason.MODEL_ERROR, DeadLetterReason.INTERNAL_ERROR})
T = TypeVar("T")


class ApiError(Exception):
    """An error answer: status and OpenAI-shaped detail."""

    def __init__(self, status: int, detail: ErrorDetail) -> None:
        super().__init__(detail.message)
        self.status = status
        self.detail = detail


def _ingest_error(error: IngestError, param: str) -> ApiError:
    if error.reason in _SERVER_FAULTS:
        return ApiError(500, ErrorDetail(message=f"{error.reason.value}: {error.detail}", type="server_error",
                                         code=error.reason.value))
    status = 413 if error.reason is DeadLetterReason.MESSAGE_TOO_LARGE else 400
    return ApiError(status, ErrorDetail(message=f"{error.reason.value}: {error.detail}",
                                        type="invalid_request_error", param=param, code=error.reason.value))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problems of a request body, by field; never the submitted values."""
    errors = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or '(body)'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    first = errors[0]["loc"][1:] if errors else ()
    return "; ".join(parts) + more, ".".join(str(p) for p in first) or None


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


async def _caller(request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> ApiKey:
    """The key the gate verified (the dependency also documents the scheme in OpenAPI).

    A coroutine, so FastAPI runs it on the event loop rather than hopping to a worker thread.
    """
    key: ApiKey = request.state.api_key
    return key


def create_api(pipeline: PostHandler, keys: ApiKeyStore, metrics: ApiMetrics, *, max_in_flight: int,
               max_body_bytes: int, max_inputs: int) -> FastAPI:
    """The API app; the caller serves it (``moderator serve`` on ``MODERATOR_API_PORT``)."""
    app = FastAPI(title="moderator API", version="1",
                  description="Synchronous moderation on the stream's models, policies, cache and batches. "
                              "`/v1/moderations` speaks OpenAI's omni-moderation format.",
                  responses={code: {"model": ErrorResponse} for code in (400, 401, 413, 429, 500)})
    app.add_middleware(Gate, keys=keys, metrics=metrics, max_in_flight=max_in_flight,
                       max_body_bytes=max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(ErrorResponse(error=exc.detail).model_dump(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        detail = ErrorDetail(message=message, type="invalid_request_error", param=param, code="invalid_request")
        return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=400)

    async def traced(request: Request, response: Response, name: str,
                     work: Callable[[], Awaitable[T]]) -> T:
        parent: Context = _PROPAGATOR.extract(dict(request.headers), context=Context())
        with pipeline.telemetry.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            response.headers[TRACE_HEADER] = tracing.trace_id_of(span)
            try:
                return await work()
            except (ApiError, IngestError):
                raise
            except Exception as exc:  # a bug must answer 500, not drop the connection
                log.exception("API request failed")
                raise ApiError(500, ErrorDetail(message="internal error", type="server_error",
                                                code="internal_error")) from exc

    async def decide(post: PostInput, param: str, endpoint: str) -> Decided:
        with pipeline.telemetry.tracer.start_as_current_span("decide",
                                                             attributes={"moderator.post_id": post.post_id}):
            try:
                outcome = await pipeline.moderate(post.value)
            except IngestError as error:
                raise _ingest_error(error, param) from error
        metrics.decided(endpoint, outcome.decision)
        return outcome

    @app.post("/v1/moderations", response_model=ModerationResponse, summary="Classify text and images "
              "(OpenAI omni-moderation compatible)")
    async def moderations(body: ModerationRequest, request: Request, response: Response,
                          key: ApiKey = Depends(_caller)) -> ModerationResponse:
        request_id = f"modr-{uuid.uuid4().hex}"
        try:
            posts = posts_of(body, request_id, key.name, max_inputs)
        except InputError as exc:
            raise ApiError(400, ErrorDetail(message=str(exc), type="invalid_request_error", param=exc.param,
                                            code="invalid_input")) from exc
        single = len(posts) == 1

        async def work() -> ModerationResponse:
            outcomes = await _all_settled([decide(post, "input" if single else f"input[{index}]", "moderations")
                                           for index, post in enumerate(posts)])
            results = [moderation_result(o.decision, o.policy, p.input_types) for o, p in zip(outcomes, posts,
                                                                                             strict=True)]
            return ModerationResponse(id=request_id, model=pipeline.infer.classifier.info.name, results=results)

        return await traced(request, response, "POST /v1/moderations", work)

    @app.post("/v1/decide", response_model=Decision, summary="The project's decision for one post")
    async def decide_post(post: Post, request: Request, response: Response, key: ApiKey = Depends(_caller),
                          publish: bool = Query(False, description="Also publish the decision to the decisions "
                                                "topic (and send it to review when its action is review).")
                          ) -> Decision:
        value = orjson.dumps(post.model_dump(mode="json", exclude_none=True))

        async def work() -> Decision:
            outcome = await decide(PostInput(post.post_id, value, ()), "post", "decide")
            if publish:
                await pipeline.deliver(outcome)
            return outcome.decision

        return await traced(request, response, "POST /v1/decide", work)

    return app
