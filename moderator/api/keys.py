"""API keys: the project's token store (random tokens kept as HMACs under a server secret, revocable
at run time, the same store the review app issues its tokens from) under ``moderator:api:``, read
through a short memo.

Without the memo every request cost two Redis round trips and a pooled connection (200 concurrent
clients exhausted the pool). A verified key is remembered for ``ttl_s``, so a revoked key is
refused within that time; only live keys are remembered (under the SHA-256 of the token), so
made-up keys cannot grow the memo, and their lookups wait for one of ``max_lookups`` slots, so they
cannot take every Redis connection either.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from redis.asyncio import Redis

from moderator.keys import API
from moderator.review.tokens import IssuedToken, TokenRecord, TokenStore
from moderator.settings import Settings

API_KEY_ROLE = "api"


def api_key_store(redis: Redis, settings: Settings) -> TokenStore:
    """The API's keys in Redis, under ``MODERATOR_API_KEY_SECRET`` (ValueError when it is too short)."""
    return TokenStore(redis, API.key("tokens", ""), settings.api_key_secret)


class CachedKeys:
    """``verify`` of a token store, remembered for ``ttl_s`` and bounded in concurrent Redis lookups."""

    def __init__(self, store: TokenStore, ttl_s: float, max_lookups: int = 16) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._memo: dict[bytes, tuple[float, TokenRecord]] = {}
        self._lookups = asyncio.Semaphore(max_lookups)

    async def verify(self, token: str) -> TokenRecord | None:
        """The record of a live API key, or None (malformed, unknown, revoked, or not an API key)."""
        memo_key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        memo = self._memo.get(memo_key)
        if memo is not None and memo[0] > now:
            return memo[1]
        async with self._lookups:
            record = await self.store.verify(token)
        if record is None or record.role != API_KEY_ROLE:
            self._memo.pop(memo_key, None)
            return None
        if self.ttl_s > 0:
            self._memo[memo_key] = (now + self.ttl_s, record)
        return record


async def issue_api_key(store: TokenStore, name: str, label: str = "") -> IssuedToken:
    """A fresh API key for ``name`` (shown once: only its HMAC is stored)."""
    return await store.issue(name, API_KEY_ROLE, label)
