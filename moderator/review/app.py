"""The review app: a JSON API under /api and server-rendered pages, built from a ReviewContext.

Every route but the login page and the static files needs an account: 401 without one, 403 for a
reviewer on admin routes or a session request without its CSRF token. Pages answer 401 with the
login form, so a browser lands on it wherever it starts.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from moderator.banks.schema import BANK_NAME, BankKind
from moderator.review.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    authenticate,
    unauthorized,
)
from moderator.review.banks import BankChange, BankEntryFields, BankHashEntry, BankView
from moderator.review.context import ReviewContext
from moderator.review.models import (
    AuditAction,
    AuditEntry,
    DecideResult,
    ItemState,
    QueueEntry,
    QueueStats,
    Role,
    Verdict,
)
from moderator.review.queue import ReviewConflict

HERE = Path(__file__).resolve().parent
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
ItemId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
PolicyName = Annotated[str, PathParam(min_length=1, max_length=256)]
BankName = Annotated[str, PathParam(pattern=BANK_NAME, max_length=64)]
BankHash = Annotated[str, PathParam(pattern=r"^[0-9a-fA-F]{64}$")]


class Me(BaseModel):
    """The caller, as the UI shows it."""

    name: str
    role: Role


class AuditPage(BaseModel):
    """A page of the audit log, newest first; ``next`` fetches the older entries."""

    entries: list[AuditEntry]
    next: str | None


def _context(request: Request) -> ReviewContext:
    context: ReviewContext = request.app.state.review
    return context


async def _maybe_caller(request: Request) -> Principal | None:
    context = _context(request)
    return await authenticate(request, context.accounts, context.sessions)


async def _caller(principal: Annotated[Principal | None, Depends(_maybe_caller)]) -> Principal:
    if principal is None:
        raise unauthorized()
    return principal


async def _admin(principal: Annotated[Principal, Depends(_caller)]) -> Principal:
    if principal.role is not Role.ADMIN:
        raise HTTPException(403, "admins only")
    return principal


Caller = Annotated[Principal, Depends(_caller)]
Admin = Annotated[Principal, Depends(_admin)]
MaybeCaller = Annotated[Principal | None, Depends(_maybe_caller)]
Context = Annotated[ReviewContext, Depends(_context)]

_CONFLICT_STATUS = {"not_found": 404}


def _conflict(exc: ReviewConflict) -> HTTPException:
    return HTTPException(_CONFLICT_STATUS.get(exc.code, 409), exc.code)


async def _state(context: ReviewContext, item_id: str) -> ItemState:
    state = await context.queue.get(item_id)
    if state is None:
        raise HTTPException(404, "not_found")
    return state


def _api(app: FastAPI) -> None:
    """The JSON API."""

    @app.get("/api/me")
    async def me(caller: Caller) -> Me:
        """Who is calling."""
        return Me(name=caller.name, role=caller.role)

    @app.get("/api/queues")
    async def queues(caller: Caller, context: Context) -> list[QueueStats]:
        """Every policy's queue and its counts."""
        return await context.queue.queues()

    @app.get("/api/queues/{policy}/items")
    async def waiting(policy: PolicyName, caller: Caller, context: Context,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[QueueEntry]:
        """The waiting items of one policy, in claim order."""
        return await context.queue.waiting(policy, limit)

    @app.post("/api/queues/{policy}/claim", response_model=ItemState,
              responses={204: {"description": "the queue is empty"}})
    async def claim_next(policy: PolicyName, caller: Caller, context: Context) -> ItemState | Response:
        """Claim the next item of a policy's queue (204 when it is empty)."""
        item_id = await context.queue.claim_next(policy, caller.name)
        return Response(status_code=204) if item_id is None else await _state(context, item_id)

    @app.get("/api/items/{item_id}")
    async def show(item_id: ItemId, caller: Caller, context: Context) -> ItemState:
        """One item: the post, scores, rules that fired, and its state."""
        return await _state(context, item_id)

    @app.get("/api/items/{item_id}/image")
    async def image(item_id: ItemId, caller: Caller, context: Context) -> Response:
        """The item's image (a JPEG we re-encoded), to signed-in callers only."""
        data = await context.queue.image(item_id)
        if data is None:
            raise HTTPException(404, "no image")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=300"})

    @app.post("/api/items/{item_id}/claim")
    async def claim(item_id: ItemId, caller: Caller, context: Context) -> ItemState:
        """Claim this item, or renew your lease on it."""
        try:
            await context.queue.claim(item_id, caller.name)
        except ReviewConflict as exc:
            raise _conflict(exc) from exc
        return await _state(context, item_id)

    @app.post("/api/items/{item_id}/release")
    async def release(item_id: ItemId, caller: Caller, context: Context) -> ItemState:
        """Give your claim back (admins may release anyone's)."""
        try:
            await context.queue.release(item_id, caller.name, force=caller.role is Role.ADMIN)
        except ReviewConflict as exc:
            raise _conflict(exc) from exc
        return await _state(context, item_id)

    @app.post("/api/items/{item_id}/decide")
    async def decide(item_id: ItemId, verdict: Verdict, caller: Caller, context: Context) -> DecideResult:
        """Allow or block an item you hold; the decision goes to the decisions topic."""
        try:
            decision = await context.queue.decide(item_id, caller.name, verdict)
        except ReviewConflict as exc:
            raise _conflict(exc) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        published = await context.outbox.publish(item_id, decision, context.publish_timeout_s)
        return DecideResult(decision=decision, published=published)

    @app.get("/api/items/{item_id}/history")
    async def history(item_id: ItemId, caller: Caller, context: Context) -> list[AuditEntry]:
        """Every action on this item, oldest first."""
        return await context.audit.history(item_id)

    @app.get("/api/audit")
    async def audit(admin: Admin, context: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                    before: Annotated[str | None, Query(pattern=r"^\d+-\d+$")] = None) -> AuditPage:
        """The audit log, newest first (admins only)."""
        entries, next_page = await context.audit.recent(limit, before)
        return AuditPage(entries=entries, next=next_page)

    @app.get("/api/banks")
    async def banks(admin: Admin, context: Context) -> list[BankView]:
        """Every hash bank with its entries (admins only)."""
        return await context.banks.banks()

    @app.post("/api/banks/{bank}/entries")
    async def add_bank_entry(bank: BankName, request: Request, admin: Admin, context: Context) -> BankChange:
        """Bank an image (multipart: ``image``, ``kind``, ``label``) or a hash (JSON: ``hash``, ``kind``, ``label``).

        ``kind`` creates the bank on first use; without it the bank must exist. Admins only.
        """
        try:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form(max_files=1, max_fields=4)
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise HTTPException(422, "multipart upload needs an 'image' file")
                fields = BankEntryFields.model_validate(
                    {k: v for k, v in form.multi_items() if k in ("kind", "label") and v})
                return await context.banks.add_image(bank, await upload.read(), fields, admin.name)
            entry = BankHashEntry.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        return await context.banks.add_hash(bank, entry, admin.name)

    @app.delete("/api/banks/{bank}/entries/{digest}")
    async def remove_bank_entry(bank: BankName, digest: BankHash, admin: Admin, context: Context) -> BankChange:
        """Remove an entry from a bank (404 when it is not banked). Admins only."""
        return await context.banks.remove(bank, digest, admin.name)


def _pages(app: FastAPI, templates: Jinja2Templates) -> None:
    """The server-rendered pages: login, review, audit, hash banks."""

    def login_page(request: Request, status: int, error: str = "") -> HTMLResponse:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = templates.TemplateResponse(request, "login.html", {"csrf": token, "error": error},
                                              status_code=status)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                            secure=_context(request).settings.review_secure_cookies)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def review_page(request: Request, caller: MaybeCaller) -> HTMLResponse:
        """The review screen (the login form, with 401, when signed out)."""
        if caller is None:
            return login_page(request, 401)
        return templates.TemplateResponse(request, "review.html", {"me": caller})

    @app.get("/audit", response_class=HTMLResponse)
    async def audit_page(request: Request, caller: MaybeCaller, context: Context,
                         before: Annotated[str | None, Query(pattern=r"^\d+-\d+$")] = None) -> HTMLResponse:
        """The audit log for admins (403 for reviewers)."""
        if caller is None:
            return login_page(request, 401)
        if caller.role is not Role.ADMIN:
            return templates.TemplateResponse(request, "forbidden.html", {"me": caller}, status_code=403)
        entries, next_page = await context.audit.recent(200, before)
        return templates.TemplateResponse(request, "audit.html", {"me": caller, "entries": entries, "next": next_page})

    @app.get("/banks", response_class=HTMLResponse)
    async def banks_page(request: Request, caller: MaybeCaller, context: Context) -> HTMLResponse:
        """The hash banks for admins: upload an image to a bank, remove entries (403 for reviewers)."""
        if caller is None:
            return login_page(request, 401)
        if caller.role is not Role.ADMIN:
            return templates.TemplateResponse(request, "forbidden.html", {"me": caller}, status_code=403)
        return templates.TemplateResponse(request, "banks.html", {"me": caller, "banks": await context.banks.banks(),
                                                                  "kinds": [k.value for k in BankKind]})

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        """The login form."""
        return login_page(request, 200)

    @app.post("/login")
    async def login(request: Request, context: Context) -> Response:
        """Check name and token (and the form's CSRF token), then start a session."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        name, token, csrf = (form.get(field, [""])[0] for field in ("username", "token", "csrf"))
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
            return login_page(request, 403, "The form expired; please try again.")
        user = context.accounts.login(name, token)
        if user is None:
            await context.audit.record(name[:64] or "-", AuditAction.LOGIN_FAILED)
            return login_page(request, 401, "Unknown name or token.")
        session_id, _ = await context.sessions.create(user)
        await context.audit.record(user.name, AuditAction.LOGIN)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", path="/",
                            max_age=context.settings.review_session_ttl_s, secure=context.settings.review_secure_cookies)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request, caller: Caller, context: Context) -> Response:
        """End the session (CSRF-checked like every other state change)."""
        if session_id := request.cookies.get(SESSION_COOKIE):
            await context.sessions.delete(session_id)
        await context.audit.record(caller.name, AuditAction.LOGOUT)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def create_app(context: ReviewContext) -> FastAPI:
    """The review app on ``context`` (whose lifecycle the caller owns)."""
    app = FastAPI(title="moderator review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = context
    templates = Jinja2Templates(directory=HERE / "templates")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Bodies here are small forms and verdicts; refuse big ones before anything reads them.
        length = request.headers.get("content-length", "0")
        limit = MAX_BODY_BYTES
        if request.method == "POST" and BANK_UPLOAD_PATH.match(request.url.path):
            limit += _context(request).settings.max_image_bytes
        if not length.isdigit() or int(length) > limit:
            return Response("request body too large", status_code=413)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("cache-control", "no-store")
        return response

    _api(app)
    _pages(app, templates)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
