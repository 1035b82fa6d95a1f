"""The review app: a JSON API under /api and server-rendered pages, built from a ReviewContext.

Every route but the login page and the static files needs an account: 401 without one, 403 for a
reviewer on admin routes or a session request without its CSRF token, 429 while the caller's
address must wait after failed sign-ins. Pages answer 401 with the login form, so a browser lands
on it wherever it starts. Routes live in `routes` (one APIRouter per area); this module wires them
behind the middleware: trusted-proxy headers, body limits, security headers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from moderator.review.context import ReviewContext
from moderator.review.middleware import BodyLimit, SecurityHeaders, body_limit
from moderator.review.routes import admin, pages, queues

HERE = Path(__file__).resolve().parent
MAX_ERRORS = 20


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 saying where and why, without echoing the input back."""
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:200], "type": e.get("type", "")}
              for e in exc.errors()[:MAX_ERRORS]]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(context: ReviewContext) -> FastAPI:
    """The review app on ``context`` (whose lifecycle the caller owns)."""
    app = FastAPI(title="moderator review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = context
    app.exception_handler(RequestValidationError)(_validation_error)
    for router in (queues.router, admin.router, pages.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # Added last runs first: proxy headers (only from trusted proxies), then the body limit, then headers.
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=body_limit(context.settings.max_image_bytes))
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=context.settings.review_trusted_proxies)
    return app
