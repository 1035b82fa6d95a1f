"""Who may use the review app: API tokens from the token store, browser sessions, CSRF, throttling.

API clients send ``Authorization: Bearer <token>``; tokens are random, issued by `moderator review
user add` or an admin (`POST /api/tokens`), stored only as HMACs (see `tokens`) and revocable at
runtime. Browsers sign in with their name and token and get a session cookie (HttpOnly,
SameSite=Strict, Secure over HTTPS) bound to that token: revoking the token ends its sessions.
Every state-changing request on a session must also carry the session's CSRF token
(``X-CSRF-Token`` header or ``csrf`` form field). Refused credentials are counted per client
address and account, throttled (429 + Retry-After) and written to the security stream. Tokens are
never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from moderator.review.audit import AuditLog
from moderator.review.keys import ReviewKeys
from moderator.review.metrics import ReviewMetrics
from moderator.review.models import AuditAction, Role
from moderator.review.throttle import LoginThrottle, Throttled
from moderator.review.tokens import IssuedToken, TokenRecord, TokenStore

log = logging.getLogger(__name__)

SESSION_COOKIE = "moderator_session"
LOGIN_CSRF_COOKIE = "moderator_login_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USER_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"


class NewUser(BaseModel):
    """An account to create (the body of ``POST /api/tokens``): its name, role and a note."""

    name: str = Field(pattern=USER_NAME)
    role: Role = Role.REVIEWER
    label: str = Field("", max_length=200)


async def issue_user_token(tokens: TokenStore, user: NewUser) -> IssuedToken:
    """A fresh token for ``user``; a name keeps one role (ValueError when it already holds another)."""
    held = {t.role for t in await tokens.list(user.name)}
    if held and held != {user.role.value}:
        raise ValueError(f"{user.name!r} already holds {sorted(held)} tokens: revoke them to change the role")
    return await tokens.issue(user.name, user.role.value, user.label)


class Principal(BaseModel):
    """The caller of one request."""

    name: str
    role: Role
    via: Literal["token", "session"]
    token_id: str
    csrf: str | None = None


class Session(BaseModel):
    """A browser session as stored in Redis: it lives only while the token it was opened with does."""

    name: str
    csrf: str
    token_id: str


class Sessions:
    """Browser sessions in Redis, stored under the SHA-256 of the cookie (a Redis dump holds no cookies)."""

    def __init__(self, redis: Redis, keys: ReviewKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, session_id: str) -> str:
        return self.keys.session(hashlib.sha256(session_id.encode()).hexdigest())

    async def create(self, token: TokenRecord) -> tuple[str, Session]:
        """A new session for the holder of ``token``: the cookie value and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(name=token.subject, csrf=secrets.token_urlsafe(32), token_id=token.token_id)
        await self.redis.set(self._key(session_id), session.model_dump_json(), ex=self.ttl_s)
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        """The live session behind a cookie value."""
        raw = await self.redis.get(self._key(session_id))
        return Session.model_validate_json(raw) if raw else None

    async def delete(self, session_id: str) -> None:
        """End a session."""
        await self.redis.delete(self._key(session_id))


def unauthorized() -> HTTPException:
    """401 with the challenge API clients expect."""
    return HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})


def too_many(wait: Throttled) -> HTTPException:
    """429 with the wait, for a throttled address or account."""
    return HTTPException(429, f"too many failed sign-ins: try again in {wait.retry_after_s} s",
                         headers={"Retry-After": str(wait.retry_after_s)})


def client_address(request: Request) -> str:
    """The caller's address (a trusted proxy's X-Forwarded-For is applied by the app's middleware)."""
    return request.client.host if request.client else "unknown"


async def _csrf_presented(request: Request) -> str:
    if header := request.headers.get(CSRF_HEADER):
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return parse_qs((await request.body()).decode("utf-8", "replace")).get("csrf", [""])[0]
    if content_type.startswith("multipart/form-data"):  # image uploads; Starlette keeps the parsed form
        field = (await request.form()).get("csrf")
        return field if isinstance(field, str) else ""
    return ""


@dataclass
class Authenticator:
    """Checks bearer tokens, sessions and sign-ins; refusals are throttled, counted and logged."""

    tokens: TokenStore
    sessions: Sessions
    throttle: LoginThrottle
    audit: AuditLog
    metrics: ReviewMetrics

    async def _refuse(self, kind: Literal["login", "token"], address: str, attempted: str | None) -> None:
        self.metrics.auth_failures.labels(kind).inc()
        action = AuditAction.LOGIN_FAILED if kind == "login" else AuditAction.TOKEN_REFUSED
        await self.audit.refused(action, address, attempted)
        wait = await self.throttle.failed(address, attempted)
        log.warning("review %s refused from %s%s%s", kind, address, f" for {attempted!r}" if attempted else "",
                    f"; next attempt in {wait.retry_after_s} s" if wait else "")

    async def _must_wait(self, kind: Literal["login", "token"], address: str, account: str | None) -> None:
        if wait := await self.throttle.check(address, account):
            self.metrics.throttled.labels(kind).inc()
            raise too_many(wait)

    async def sign_in(self, name: str, token: str, address: str) -> TokenRecord | None:
        """The token's record when ``name`` holds ``token``; raises 429 while the address or name must wait."""
        attempted = name[:64]
        await self._must_wait("login", address, attempted)
        record = await self.tokens.verify(token)
        if record is None or not hmac.compare_digest(record.subject.encode(), name.encode()):
            await self._refuse("login", address, attempted)
            return None
        await self.throttle.succeeded(record.subject)
        return record

    async def caller(self, request: Request) -> Principal | None:
        """The caller, or None when the request carries no valid credentials.

        Raises 429 for a bearer token from an address that must wait, and 403 for a session
        request that changes state without the session's CSRF token.
        """
        authorization = request.headers.get("authorization")
        if authorization is not None:
            return await self._bearer(authorization, client_address(request))
        session_id = request.cookies.get(SESSION_COOKIE)
        session = await self.sessions.get(session_id) if session_id else None
        record = await self.tokens.get(session.token_id) if session else None
        if session is None or record is None:
            return None  # no session, or the token it was opened with was revoked
        if request.method not in SAFE_METHODS and not hmac.compare_digest(
            (await _csrf_presented(request)).encode(), session.csrf.encode()
        ):
            raise HTTPException(403, "missing or wrong CSRF token")
        return Principal(name=record.subject, role=Role(record.role), via="session", token_id=record.token_id,
                         csrf=session.csrf)

    async def _bearer(self, authorization: str, address: str) -> Principal | None:
        await self._must_wait("token", address, None)
        scheme, _, token = authorization.partition(" ")
        record = await self.tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
        if record is None:
            await self._refuse("token", address, None)
            return None
        return Principal(name=record.subject, role=Role(record.role), via="token", token_id=record.token_id)
