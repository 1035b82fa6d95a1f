"""API keys: issued at random, stored only as salted hashes in Redis, revocable at run time.

A key reads ``mk-<id>.<secret>``: the id finds its record (one Redis lookup, no scan over every
key), the secret is 32 random bytes checked against ``sha256(salt + secret)`` in constant time.
The secret is shown once, when the key is created; a Redis dump holds no usable key. Revoking
deletes the record, so the next request with that key is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime

from pydantic import BaseModel
from redis.asyncio import Redis

from moderator.keys import API

KEYS_HASH = API.key("keys")
_TOKEN = re.compile(r"mk-([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")


class ApiKey(BaseModel):
    """A key as listed and as attached to the requests it authenticates (never its secret)."""

    key_id: str
    name: str
    created_at: datetime


class _StoredKey(ApiKey):
    salt: str
    digest: str


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class ApiKeyStore:
    """The API keys in Redis (one hash: key id -> stored key JSON)."""

    def __init__(self, redis: Redis, hash_name: str = KEYS_HASH) -> None:
        self.redis = redis
        self.hash_name = hash_name

    async def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key for ``name``: its record and the token to hand out (shown only now)."""
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        stored = _StoredKey(key_id=key_id, name=name, created_at=datetime.now(UTC), salt=salt,
                            digest=_digest(salt, secret))
        await self.redis.hset(self.hash_name, key_id, stored.model_dump_json())
        return ApiKey.model_validate(stored.model_dump()), f"mk-{key_id}.{secret}"

    async def verify(self, token: str) -> ApiKey | None:
        """The key ``token`` belongs to, or None (malformed, unknown, revoked or wrong secret)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        stored = await self._stored(match.group(1))
        if stored is None or not hmac.compare_digest(_digest(stored.salt, match.group(2)), stored.digest):
            return None
        return ApiKey.model_validate(stored.model_dump())

    async def _stored(self, key_id: str) -> _StoredKey | None:
        raw = await self.redis.hget(self.hash_name, key_id)
        return _StoredKey.model_validate_json(raw) if raw is not None else None

    async def revoke(self, key_id: str) -> bool:
        """Delete a key; False when there was none with that id."""
        return bool(await self.redis.hdel(self.hash_name, key_id))

    async def list(self) -> list[ApiKey]:
        """Every live key, oldest first."""
        stored = [_StoredKey.model_validate_json(raw) for raw in (await self.redis.hvals(self.hash_name))]
        return sorted((ApiKey.model_validate(k.model_dump()) for k in stored), key=lambda k: k.created_at)


class CachedKeyStore(ApiKeyStore):
    """The store as the API reads it: live keys remembered for ``ttl_s``, Redis lookups bounded.

    Without this every request would cost a Redis round trip and a pooled connection (200 clients
    exhausted the pool). A revoked key is refused within ``ttl_s``. Only existing keys are
    remembered, so made-up ids cannot grow the memo; their lookups wait for one of
    ``max_lookups`` slots, so they cannot take every Redis connection either.
    """

    def __init__(self, redis: Redis, ttl_s: float, max_lookups: int = 16, hash_name: str = KEYS_HASH) -> None:
        super().__init__(redis, hash_name)
        self.ttl_s = ttl_s
        self._memo: dict[str, tuple[float, _StoredKey]] = {}
        self._lookups = asyncio.Semaphore(max_lookups)

    async def _stored(self, key_id: str) -> _StoredKey | None:
        now = time.monotonic()
        memo = self._memo.get(key_id)
        if memo is not None and memo[0] > now:
            return memo[1]
        async with self._lookups:
            stored = await super()._stored(key_id)
        if stored is None:
            self._memo.pop(key_id, None)
        elif self.ttl_s > 0:
            self._memo[key_id] = (now + self.ttl_s, stored)
        return stored
