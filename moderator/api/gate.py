"""The API's front door, an ASGI app: what every ``/v1/`` request passes before any of its body is
read (key, admission, size), then the operation it names, called directly with the body's bytes.

In this order, so an unauthenticated or excess request costs no memory: the API key is checked
(401), the request is admitted only while fewer than ``max_in_flight`` are being served (429 with
Retry-After, so queued work and buffered bodies stay bounded), and the body is read as it arrives
and refused past ``max_body_bytes`` (413), declared length or not. Everything else (the docs, the
OpenAPI schema, unknown paths) goes to the FastAPI app behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moderator.api.errors import ApiError
from moderator.api.keys import CachedKeys
from moderator.api.metrics import ApiMetrics
from moderator.api.routes import Answer, ApiRequest, Operation
from moderator.api.schema import ErrorDetail, ErrorResponse
from moderator.review.tokens import TokenRecord

log = logging.getLogger(__name__)

API_PREFIX = "/v1/"
RETRY_AFTER_S = 1
TRACE_HEADER = "X-Trace-Id"


async def send_json(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    """Answer ``body`` (JSON) with ``status``."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, detail: ErrorDetail, headers: Mapping[str, str] | None = None) -> None:
    """Answer with an OpenAI-shaped error body."""
    await send_json(send, status, ErrorResponse(error=detail).model_dump_json().encode(), headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            raise _BodyTooLarge
        if not message.get("more_body", False):
            return bytes(body)


class Gate:
    """The API's ASGI app: ``operations`` (``POST`` by path) behind the checks; ``app`` serves the rest."""

    def __init__(self, app: ASGIApp, operations: Mapping[str, Operation], keys: CachedKeys, metrics: ApiMetrics,
                 max_in_flight: int, max_body_bytes: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.operations = operations
        self.keys = keys
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        started = self.clock()
        # A label per known route only: made-up paths must not grow the metric's series without bound.
        endpoint = scope["path"] if scope["path"] in self.operations else "other"
        status = {"code": 500}

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counted_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(self.clock() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = _header(scope, b"authorization") or ""
        scheme, _, token = authorization.partition(" ")
        key = await self.keys.verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            await send_error(send, 401, ErrorDetail(
                message="missing or invalid API key: send Authorization: Bearer <key> (moderator api-key create)",
                type="authentication_error", code="invalid_api_key"), {"WWW-Authenticate": "Bearer"})
            return
        if self.in_flight >= self.max_in_flight:
            await send_error(send, 429, ErrorDetail(
                message=f"the service is at its limit of {self.max_in_flight} requests in flight; retry shortly",
                type="rate_limit_error", code="overloaded"), {"Retry-After": str(RETRY_AFTER_S)})
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(send)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self._admitted(scope, receive, send, key)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, key: TokenRecord) -> None:
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except _BodyTooLarge:
            await self._too_large(send)
            return
        operation = self.operations.get(scope["path"])
        if operation is not None:
            await self._operate(operation, ApiRequest(body, scope["headers"], scope["query_string"], key), scope, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, replay, send)

    @staticmethod
    async def _operate(operation: Operation, request: ApiRequest, scope: Scope, send: Send) -> None:
        if scope["method"] != "POST":
            await send_error(send, 405, ErrorDetail(message="Method Not Allowed: use POST", type="invalid_request_error",
                                                    code="http_405"), {"Allow": "POST"})
            return
        try:
            answer: Answer = await operation(request)
        except ApiError as exc:
            await send_error(send, exc.status, exc.detail)
            return
        except Exception:  # a bug must answer 500, not drop the connection
            log.exception("API request failed")
            await send_error(send, 500, ErrorDetail(message="internal error", type="server_error",
                                                    code="internal_error"))
            return
        await send_json(send, 200, answer.body, {TRACE_HEADER: answer.trace_id})

    async def _too_large(self, send: Send) -> None:
        await send_error(send, 413, ErrorDetail(
            message=f"request body over the limit of {self.max_body_bytes} bytes (MODERATOR_MAX_MESSAGE_BYTES)",
            type="invalid_request_error", code="message_too_large"))

