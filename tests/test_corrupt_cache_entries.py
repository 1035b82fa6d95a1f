"""Foreign or damaged values in Redis are misses (counted, logged once), never failed decisions.

Against the real Redis: score entries, hash-bank entries and escalation verdicts, and one whole
pipeline run where some score entries are damaged between a post and its repost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from moderator.banks.schema import BankKind
from moderator.banks.store import BankError, BankStore
from moderator.cache.store import ScoreCache
from moderator.client import produce
from moderator.decisions.schema import Decision
from moderator.ingest.validate import IngestLimits, validate_record
from moderator.keys import Keyspace
from moderator.pipeline.escalation import EscalationTier
from moderator.settings import Settings
from moderator.telemetry.metrics import ServiceMetrics
from moderator.testing.samples import records_for, sample_posts
from tests.conftest import Servers, make_settings
from tests.pipeline_helpers import collect, running_service

GOOD_HASH = "ab" * 32
BAD_VALUES = [b"\xff\xfe not json", b"[0.1, 0.2]", b'{"violence": "high"}', b'{"violence": 7.5}', b"{}", b"null"]


@pytest.fixture
async def redis(servers: Servers) -> AsyncIterator[Redis]:
    client = Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()


def corrupt_count(kind: str) -> float:
    return ServiceMetrics().registry.get_sample_value("moderator_corrupt_cache_entries_total", {"kind": kind}) or 0.0


async def test_unreadable_score_entries_are_misses_counted_and_logged_once(
    redis: Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    cache = ScoreCache(redis, 60, Keyspace(f"test:scores:{uuid.uuid4().hex[:8]}"))
    await cache.set_many("v1", {"good": {"violence": 0.25, "scam": 0.0}, "other": {"scam": 1.0}})
    assert 0 < await redis.ttl(cache.key("v1", "other")) <= 60, "every key of a batch is stored with the TTL"
    for i, value in enumerate(BAD_VALUES):
        await redis.set(cache.key("v1", f"bad{i}"), value)
    hashes = ["good", *(f"bad{i}" for i in range(len(BAD_VALUES))), "absent"]
    before = corrupt_count("scores")
    with caplog.at_level(logging.WARNING, logger="moderator.telemetry.corrupt_entries"):
        first = await cache.get_many("v1", hashes)
        second = await cache.get_many("v1", hashes)
    assert first == second == [{"violence": 0.25, "scam": 0.0}, *([None] * len(BAD_VALUES)), None]
    assert corrupt_count("scores") - before == 2 * len(BAD_VALUES)
    assert len(caplog.records) == len(BAD_VALUES), "each bad entry is logged the first time only"


async def test_unreadable_bank_entries_versions_and_descriptions_are_skipped(redis: Redis) -> None:
    store = BankStore(redis, namespace=f"test:banks:{uuid.uuid4().hex[:8]}")
    await store.create("known", BankKind.SHA256)
    await store.add("known", [GOOD_HASH], label="known bad")
    await redis.hset(store._entries("known"), "cd" * 32, b"\x00garbage")
    await redis.hset(store._entries("known"), "ef" * 32, orjson.dumps({"hash": "not hex"}))
    await redis.hset(store._versions, "broken", b"seven")
    await redis.hset(store._infos, "broken", b"{not json")
    before = corrupt_count("bank_entry")
    assert [e.hash for e in await store.entries("known")] == [GOOD_HASH]
    assert corrupt_count("bank_entry") - before == 2
    assert await store.versions() == {"known": 1}
    assert [b.name for b in await store.banks()] == ["known"]
    with pytest.raises(BankError, match="unreadable"):
        await store.info("broken")


async def test_an_unreadable_escalation_verdict_is_a_miss(servers: Servers, redis: Redis) -> None:
    settings = make_settings(servers, device="cpu")
    tier = EscalationTier(settings, redis, IngestLimits.from_settings(settings),
                          namespace=f"test:escalation:{uuid.uuid4().hex[:8]}")
    try:
        key = tier.keys.key("damaged")
        await redis.set(key, b'{"unsafe": "perhaps", "categories": 3}')
        before = corrupt_count("escalation_verdict")
        assert await tier._cached(key) is None
        assert corrupt_count("escalation_verdict") - before == 1
    finally:
        await tier.close()


async def test_damaged_score_entries_do_not_dead_letter_the_batch_they_are_fetched_with(
    settings: Settings, redis: Redis,
) -> None:
    posts = sample_posts(8, seed=91, prefix="orig")
    reposts = [{**p, "post_id": f"re-{i}"} for i, p in enumerate(posts)]
    limits = IngestLimits.from_settings(settings)
    hashes = [(await validate_record(orjson.dumps(p), limits)).content_hash for p in posts]
    async with running_service(settings) as service:
        await produce(settings, records_for(posts))
        await collect(settings, settings.output_topic, len(posts))
        cache = service.pipeline.scores.cache
        assert cache is not None
        version = service.classifier.info.version
        damaged = {hashes[i] for i in (1, 4, 6)}
        for content_hash in damaged:
            await redis.set(cache.key(version, content_hash), BAD_VALUES[0])
        await produce(settings, records_for(reposts))
        decisions = [Decision.model_validate_json(r.value)
                     for r in await collect(settings, settings.output_topic, 2 * len(posts))]
    by_id = {d.post_id: d for d in decisions}
    assert set(by_id) == {str(p["post_id"]) for p in posts + reposts}
    assert service.counts.dead_letters == {}
    for i, post in enumerate(posts):
        assert by_id[f"re-{i}"].source == ("model" if hashes[i] in damaged else "cache")
        assert by_id[f"re-{i}"].scores == pytest.approx(by_id[str(post["post_id"])].scores, abs=1e-4)
