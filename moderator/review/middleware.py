"""ASGI middleware of the review app: body limits as bytes arrive, security headers, trusted proxies.

The body limit counts bytes as they arrive, so a chunked request (no Content-Length) is cut off at
the limit with 413 instead of being read in full; a declared Content-Length over the limit is
refused before the app runs. Security headers go on every answer, and HSTS on answers over HTTPS.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
# Bank uploads carry an image: they may be as big as the service accepts (max_image_bytes) plus the form.
BANK_UPLOAD_PATH = re.compile(r"^/api/banks/[^/]+/entries$")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
HSTS = "max-age=31536000; includeSubDomains"


class BodyTooLarge(Exception):
    """The request body passed its limit while it was being read."""


def _too_large() -> PlainTextResponse:
    return PlainTextResponse("request body too large", status_code=413, headers={"connection": "close"})


class BodyLimit:
    """413 for bodies over ``limit(scope)`` bytes, declared or counted as they arrive."""

    def __init__(self, app: ASGIApp, limit: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or len(length) > 18 or int(length) > limit):
            await _too_large()(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await _too_large()(scope, receive, send)


class SecurityHeaders:
    """Security headers on every answer; HSTS over HTTPS; no caching except of the static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                if scope.get("scheme") == "https":
                    headers.append((b"strict-transport-security", HSTS.encode()))
                if not scope["path"].startswith("/static/") and not any(k.lower() == b"cache-control"
                                                                         for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def body_limit(max_image_bytes: int) -> Callable[[Scope], int]:
    """The limit for one request: small forms and verdicts, or an image upload to a bank."""
    def limit(scope: Scope) -> int:
        if scope["method"] == "POST" and BANK_UPLOAD_PATH.match(scope["path"]):
            return MAX_BODY_BYTES + max_image_bytes
        return MAX_BODY_BYTES
    return limit
