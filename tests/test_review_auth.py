"""The API token store on the real Redis: random tokens kept only as HMACs, verified, listed, revoked."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from moderator.review.auth import NewUser, issue_user_token
from moderator.review.models import Role
from moderator.review.tokens import TokenStore
from tests.conftest import Servers
from tests.review_helpers import TOKEN_SECRET

pytestmark = pytest.mark.integration


async def _dump(redis: Redis, prefix: str) -> bytes:
    """Every key and value under ``prefix``, as one blob (what a stolen Redis copy would hold)."""
    blob = b""
    async for key in redis.scan_iter(f"{prefix}*"):
        blob += key + b"".join(k + v for k, v in (await redis.hgetall(key)).items())
    return blob


async def test_tokens_are_random_kept_only_as_hmacs_and_revoked_at_once(servers: Servers) -> None:
    prefix = f"test-tokens-{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(servers.redis_url)
    try:
        store = TokenStore(redis, prefix, TOKEN_SECRET)
        first = await store.issue("ana", "admin", "laptop")
        second = await store.issue("ana", "admin")
        token = first.token.get_secret_value()
        assert len(token) >= 40 and token != second.token.get_secret_value()
        assert token not in repr(first) and token not in first.model_dump_json()
        verified = await store.verify(token)
        assert verified is not None and (verified.subject, verified.role, verified.label) == ("ana", "admin", "laptop")
        assert await store.verify(token + "x") is None and await store.verify("") is None
        assert await store.verify("x" * 10_000) is None

        dump = await _dump(redis, prefix)
        assert token.encode() not in dump  # only HMACs are stored
        other_secret = TokenStore(redis, prefix, SecretStr("another-server-secret-0123456789abcdef"))
        assert await other_secret.verify(token) is None  # a Redis copy without the secret verifies nothing

        assert [r.token_id for r in await store.list("ana")] == [first.record.token_id, second.record.token_id]
        revoked = await store.revoke(first.record.token_id)
        assert revoked is not None and revoked.token_id == first.record.token_id
        assert await store.verify(token) is None
        assert await store.revoke(first.record.token_id) is None
        assert await store.verify(second.token.get_secret_value()) is not None
        assert [r.token_id for r in await store.revoke_subject("ana")] == [second.record.token_id]
        assert await store.list() == [] and await _dump(redis, prefix) == b""
    finally:
        await redis.aclose()


async def test_a_name_keeps_one_role_and_a_short_secret_is_refused(servers: Servers) -> None:
    prefix = f"test-tokens-{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(servers.redis_url)
    try:
        with pytest.raises(ValueError, match="at least 32"):
            TokenStore(redis, prefix, SecretStr("short"))
        store = TokenStore(redis, prefix, TOKEN_SECRET)
        await issue_user_token(store, NewUser(name="bo", role=Role.REVIEWER))
        with pytest.raises(ValueError, match="revoke them to change the role"):
            await issue_user_token(store, NewUser(name="bo", role=Role.ADMIN))
        await store.revoke_subject("bo")
    finally:
        await redis.aclose()
