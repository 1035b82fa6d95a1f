"""Random API tokens kept in Redis as HMACs under a server secret: issue, verify, revoke, list.

A token is shown once, when it is issued. Redis holds only HMAC-SHA256(secret, token), so a copy of
Redis reveals no token and cannot be used to test guesses without the secret. Tokens are looked up
by that HMAC: one Redis round trip, and timing says nothing about how much of a guess matched.
Nothing here knows about review; any part of the project may keep its API keys in a `TokenStore`
under a key prefix of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, Field, SecretStr
from redis.asyncio import Redis

MIN_SECRET_CHARS = 32
MAX_TOKEN_CHARS = 256  # anything longer was never issued here: refused before hashing


class TokenRecord(BaseModel):
    """What the store knows about one token: never the token itself."""

    token_id: str = Field(description="Public handle of the token (for listing and revoking).")
    subject: str = Field(description="Who holds it: an account name, a client name.")
    role: str
    label: str = ""
    created_at: datetime


class IssuedToken(BaseModel):
    """A token as issued: its record and the secret, which nobody can retrieve again."""

    record: TokenRecord
    token: SecretStr


class _Stored(TokenRecord):
    digest: str


class TokenStore:
    """API tokens in Redis under ``prefix``: a hash of records by id, and a hash of ids by HMAC."""

    def __init__(self, redis: Redis, prefix: str, secret: SecretStr) -> None:
        if len(secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the token secret needs at least {MIN_SECRET_CHARS} characters")
        self.redis = redis
        self._records = f"{prefix}records"
        self._digests = f"{prefix}digests"
        self._secret = secret.get_secret_value().encode()

    def _digest(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    async def issue(self, subject: str, role: str, label: str = "") -> IssuedToken:
        """A fresh random token for ``subject`` with ``role``."""
        token = secrets.token_urlsafe(32)
        stored = _Stored(token_id=secrets.token_hex(8), subject=subject, role=role, label=label,
                         created_at=datetime.now(UTC), digest=self._digest(token))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._records, stored.token_id, stored.model_dump_json())
            pipe.hset(self._digests, stored.digest, stored.token_id)
            await pipe.execute()
        return IssuedToken(record=TokenRecord(**stored.model_dump(exclude={"digest"})), token=SecretStr(token))

    async def verify(self, token: str) -> TokenRecord | None:
        """The record of a live token, or None for anything else."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        token_id = await self.redis.hget(self._digests, self._digest(token))
        return await self.get(token_id.decode()) if token_id else None

    async def get(self, token_id: str) -> TokenRecord | None:
        """The record of a live token by its id."""
        raw = await self.redis.hget(self._records, token_id)
        return TokenRecord.model_validate_json(raw) if raw else None

    async def list(self, subject: str | None = None) -> list[TokenRecord]:
        """Every live token (of one subject), oldest first."""
        records = [TokenRecord.model_validate_json(raw) for raw in (await self.redis.hgetall(self._records)).values()]
        return sorted((r for r in records if subject is None or r.subject == subject), key=lambda r: r.created_at)

    async def revoke(self, token_id: str) -> TokenRecord | None:
        """End a token at once; its record, or None when there was none."""
        raw = await self.redis.hget(self._records, token_id)
        if raw is None:
            return None
        stored = _Stored.model_validate_json(raw)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._records, token_id)
            pipe.hdel(self._digests, stored.digest)
            await pipe.execute()
        return TokenRecord(**stored.model_dump(exclude={"digest"}))

    async def revoke_subject(self, subject: str) -> list[TokenRecord]:
        """End every token of ``subject``; the records ended."""
        return [r for r in [await self.revoke(t.token_id) for t in await self.list(subject)] if r is not None]
