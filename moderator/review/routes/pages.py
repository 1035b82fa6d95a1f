"""The server-rendered pages: login and logout, the review screen, the audit and security logs, hash banks."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from moderator.banks.schema import BankKind
from moderator.review.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Principal, client_address
from moderator.review.models import AuditAction, Role
from moderator.review.routes.deps import Caller, Context, MaybeCaller, StreamId

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")


def secure_cookies(request: Request) -> bool:
    """Whether cookies get ``Secure``: over HTTPS (directly or from a trusted proxy), or when forced."""
    return request.url.scheme == "https" or request.app.state.review.settings.review_secure_cookies


def login_page(request: Request, status: int, error: str = "", headers: dict[str, str] | None = None) -> HTMLResponse:
    """The login form with a fresh double-submit CSRF cookie."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = templates.TemplateResponse(request, "login.html", {"csrf": token, "error": error},
                                          status_code=status, headers=headers)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=secure_cookies(request))
    return response


def _admin_page(request: Request, caller: Principal | None) -> Response | None:
    """The login form or the 403 page when ``caller`` may not see an admin page; None when they may."""
    if caller is None:
        return login_page(request, 401)
    if caller.role is not Role.ADMIN:
        return templates.TemplateResponse(request, "forbidden.html", {"me": caller}, status_code=403)
    return None


@router.get("/", response_class=HTMLResponse)
async def review_page(request: Request, caller: MaybeCaller) -> HTMLResponse:
    """The review screen (the login form, with 401, when signed out)."""
    if caller is None:
        return login_page(request, 401)
    return templates.TemplateResponse(request, "review.html", {"me": caller})


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, caller: MaybeCaller, context: Context, security: bool = False,
                     before: Annotated[str | None, Query(pattern=StreamId)] = None) -> Response:
    """The audit log (or, with ``security``, the failed sign-ins) for admins; 403 for reviewers."""
    if refused := _admin_page(request, caller):
        return refused
    entries, next_page = await context.audit.recent(200, before, security=security)
    return templates.TemplateResponse(request, "audit.html", {"me": caller, "entries": entries, "next": next_page,
                                                              "security": security})


@router.get("/banks", response_class=HTMLResponse)
async def banks_page(request: Request, caller: MaybeCaller, context: Context) -> Response:
    """The hash banks for admins: upload an image to a bank, remove entries (403 for reviewers)."""
    if refused := _admin_page(request, caller):
        return refused
    return templates.TemplateResponse(request, "banks.html", {"me": caller, "banks": await context.banks.banks(),
                                                              "kinds": [k.value for k in BankKind]})


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    """The login form."""
    return login_page(request, 200)


@router.post("/login")
async def login(request: Request, context: Context) -> Response:
    """Check the form's CSRF token, then name and token (throttled), then start a session."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    name, token, csrf = (form.get(field, [""])[0] for field in ("username", "token", "csrf"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        return login_page(request, 403, "The form expired; please try again.")
    try:
        record = await context.auth.sign_in(name, token, client_address(request))
    except HTTPException as exc:  # 429: this address or account must wait
        return login_page(request, exc.status_code, str(exc.detail), exc.headers)
    if record is None:
        return login_page(request, 401, "Unknown name or token.")
    session_id, _ = await context.auth.sessions.create(record)
    await context.audit.record(record.subject, AuditAction.LOGIN)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", path="/",
                        max_age=context.settings.review_session_ttl_s, secure=secure_cookies(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, caller: Caller, context: Context) -> Response:
    """End the session (CSRF-checked like every other state change)."""
    if session_id := request.cookies.get(SESSION_COOKIE):
        await context.auth.sessions.delete(session_id)
    await context.audit.record(caller.name, AuditAction.LOGOUT)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
