"""Who may use the review app: accounts from settings, API tokens, browser sessions, CSRF.

API clients send ``Authorization: Bearer <token>``. Browsers log in with their name and token and
get a session cookie (HttpOnly, SameSite=Strict); every state-changing request on a session must
also carry the session's CSRF token (``X-CSRF-Token`` header or ``csrf`` form field). Tokens are
compared as SHA-256 digests with ``hmac.compare_digest``, against every account, so timing says
nothing about which account or how many bytes matched. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, model_validator
from redis.asyncio import Redis

from moderator.review.keys import ReviewKeys
from moderator.review.models import Role
from moderator.settings import Settings

SESSION_COOKIE = "moderator_session"
LOGIN_CSRF_COOKIE = "moderator_login_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_TOKEN_CHARS = 16


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ReviewUser(BaseModel):
    """One account. Configure ``token`` or, to keep tokens out of the config, ``token_sha256``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    role: Role = Role.REVIEWER
    token: SecretStr | None = Field(None, min_length=MIN_TOKEN_CHARS)
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_token(self) -> ReviewUser:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"account {self.name!r} needs exactly one of token or token_sha256")
        return self

    def digest(self) -> bytes:
        """SHA-256 of the account's token."""
        if self.token is not None:
            return _digest(self.token.get_secret_value())
        return bytes.fromhex(self.token_sha256 or "")


_USERS = TypeAdapter(list[ReviewUser])


class Accounts:
    """The configured accounts, looked up by token in constant time."""

    def __init__(self, users: Iterable[ReviewUser]) -> None:
        self.users = list(users)
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("review accounts have duplicate names")
        self._digests = [(u, u.digest()) for u in self.users]
        if len({d for _, d in self._digests}) != len(self._digests):
            raise ValueError("review accounts share a token")

    @classmethod
    def from_settings(cls, settings: Settings) -> Accounts:
        """Accounts from MODERATOR_REVIEW_USERS (JSON) and MODERATOR_REVIEW_USERS_FILE, together."""
        users: list[ReviewUser] = []
        raw = settings.review_users.get_secret_value().strip()
        if raw:
            users += _USERS.validate_json(raw)
        if settings.review_users_file is not None:
            users += _USERS.validate_python(json.loads(Path(settings.review_users_file).read_text(encoding="utf-8")))
        return cls(users)

    def by_token(self, token: str) -> ReviewUser | None:
        """The account holding ``token``; every account is compared, whatever matches first."""
        presented = _digest(token)
        found = None
        for user, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = user
        return found

    def named(self, name: str) -> ReviewUser | None:
        """The account called ``name``."""
        return next((u for u in self.users if u.name == name), None)

    def login(self, name: str, token: str) -> ReviewUser | None:
        """The account when ``name`` and ``token`` belong together."""
        user = self.by_token(token)
        return user if user is not None and hmac.compare_digest(user.name.encode(), name.encode()) else None


def demo_accounts(settings: Settings) -> tuple[Accounts, str | None]:
    """The configured accounts, or one ``demo`` admin with a fresh random token (returned to print)."""
    accounts = Accounts.from_settings(settings)
    if accounts.users:
        return accounts, None
    token = secrets.token_urlsafe(18)
    return Accounts([ReviewUser(name="demo", role=Role.ADMIN, token=SecretStr(token))]), token


class Principal(BaseModel):
    """The caller of one request."""

    name: str
    role: Role
    via: Literal["token", "session"]
    csrf: str | None = None


class Session(BaseModel):
    """A browser session as stored in Redis; ``token_check`` ends it when the account's token changes."""

    name: str
    csrf: str
    token_check: str


def _token_check(user: ReviewUser) -> str:
    return hashlib.sha256(b"session:" + user.digest()).hexdigest()[:16]


class Sessions:
    """Browser sessions in Redis, stored under the SHA-256 of the cookie (a Redis dump holds no cookies)."""

    def __init__(self, redis: Redis, keys: ReviewKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, session_id: str) -> str:
        return self.keys.session(hashlib.sha256(session_id.encode()).hexdigest())

    async def create(self, user: ReviewUser) -> tuple[str, Session]:
        """A new session for ``user``: the cookie value and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(name=user.name, csrf=secrets.token_urlsafe(32), token_check=_token_check(user))
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


async def authenticate(request: Request, accounts: Accounts, sessions: Sessions) -> Principal | None:
    """The caller, or None when the request carries no valid credentials.

    Raises 403 for a session request that changes state without the session's CSRF token.
    """
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        user = accounts.by_token(token.strip()) if scheme.lower() == "bearer" else None
        return Principal(name=user.name, role=user.role, via="token") if user else None
    session_id = request.cookies.get(SESSION_COOKIE)
    session = await sessions.get(session_id) if session_id else None
    user = accounts.named(session.name) if session else None
    if session is None or user is None or not hmac.compare_digest(session.token_check, _token_check(user)):
        return None  # no session, or its account was removed or given a new token
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        (await _csrf_presented(request)).encode(), session.csrf.encode()
    ):
        raise HTTPException(403, "missing or wrong CSRF token")
    return Principal(name=user.name, role=user.role, via="session", csrf=session.csrf)
