"""The synchronous moderation API: OpenAI-compatible ``/v1/moderations`` and the project's ``/v1/decide``.

Both decide posts with the service's own pipeline stages (``PostHandler.moderate``: validation,
hash banks, the score source's cache and single-flight, the model's micro-batches, policies and
escalation), minus Kafka, so a busy model serves the stream and the API in the same batches.
A request's ``traceparent`` continues the caller's trace; the trace id comes back in the
``X-Trace-Id`` header (and in the decision).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from moderator.api.errors import ApiError, api_error, http_error, invalid_request
from moderator.api.gate import Gate
from moderator.api.keys import CachedKeys
from moderator.api.metrics import ApiMetrics
from moderator.api.openapi import document_bodies
from moderator.api.routes import Moderation, router
from moderator.api.schema import ErrorResponse, ModerationRequest
from moderator.ingest.schema import Post
from moderator.pipeline import PostHandler


def create_api(pipeline: PostHandler, keys: CachedKeys, metrics: ApiMetrics, *, max_in_flight: int,
               max_body_bytes: int, max_inputs: int) -> FastAPI:
    """The API app; the caller serves it (``moderator serve`` on ``MODERATOR_API_PORT``)."""
    app = FastAPI(title="moderator API", version="1",
                  description="Synchronous moderation on the stream's models, policies, cache and batches. "
                              "`/v1/moderations` speaks OpenAI's omni-moderation format.",
                  responses={code: {"model": ErrorResponse} for code in (400, 401, 413, 429, 500)})
    app.state.moderation = Moderation(pipeline, metrics, max_inputs)
    app.add_middleware(Gate, keys=keys, metrics=metrics, max_in_flight=max_in_flight,
                       max_body_bytes=max_body_bytes)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.include_router(router)
    document_bodies(app, {"/v1/moderations": ModerationRequest, "/v1/decide": Post})
    return app
