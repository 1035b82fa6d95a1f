"""The synchronous moderation API: OpenAI-compatible ``/v1/moderations`` and the project's ``/v1/decide``.

Both decide posts with the service's own pipeline stages (``PostHandler.moderate``: validation,
hash banks, the score source's cache and single-flight, the model's micro-batches, policies and
escalation), minus Kafka, so a busy model serves the stream and the API in the same batches.
A request's ``traceparent`` continues the caller's trace; the trace id comes back in the
``X-Trace-Id`` header (and in the decision).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from moderator.api.errors import http_error
from moderator.api.gate import Gate
from moderator.api.keys import CachedKeys
from moderator.api.metrics import ApiMetrics
from moderator.api.openapi import document
from moderator.api.routes import Moderation
from moderator.pipeline import PostHandler


def create_api(pipeline: PostHandler, keys: CachedKeys, metrics: ApiMetrics, *, max_in_flight: int,
               max_body_bytes: int, max_inputs: int) -> Gate:
    """The API's ASGI app; the caller serves it (``moderator serve`` on ``MODERATOR_API_PORT``).

    The gate answers the operations itself; FastAPI behind it serves ``/docs`` and
    ``/openapi.json``, and unknown paths get its 404 in the API's error shape.
    """
    docs = FastAPI(title="moderator API", version="1",
                   description="Synchronous moderation on the stream's models, policies, cache and batches. "
                               "`/v1/moderations` speaks OpenAI's omni-moderation format.")
    docs.add_exception_handler(HTTPException, http_error)
    document(docs)
    return Gate(docs, Moderation(pipeline, metrics, max_inputs).operations(), keys=keys, metrics=metrics,
                max_in_flight=max_in_flight, max_body_bytes=max_body_bytes)
