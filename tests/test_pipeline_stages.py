"""The pipeline's seams without Kafka: one post through validate → ... → decide, and the single-flight rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from moderator.cache.singleflight import SingleFlight
from moderator.cache.source import ScoreSource
from moderator.decisions.schema import DecisionSource
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason
from moderator.model.loader import load_classifier
from moderator.pipeline import PostHandler
from moderator.policy.loader import load_policy_set
from moderator.policy.store import PolicyStore
from moderator.settings import Settings
from moderator.telemetry.instrument import Telemetry
from tests.conftest import ROOT

SOURCES = [s.value for s in DecisionSource]


async def test_a_post_is_decided_outside_kafka_and_an_identical_one_shares_its_scores(tiny_clip_dir: Path) -> None:
    settings = Settings(model=str(tiny_clip_dir), policy_dir=ROOT / "policies", redis_url="", policy_watch=False)
    policies = PolicyStore(load_policy_set(settings.policy_dir))
    classifier = load_classifier(settings, policies.current.head_spec())
    telemetry = Telemetry(SOURCES)
    handler = PostHandler.build(settings, classifier, policies, None, None, telemetry)
    post = {"user_id": "u-1", "text": "a quiet afternoon by the lake"}
    try:
        first, second = await asyncio.gather(handler.moderate(orjson.dumps({**post, "post_id": "a"})),
                                             handler.moderate(orjson.dumps({**post, "post_id": "b"})))
        with pytest.raises(IngestError) as caught:
            await handler.moderate(b"{not json")
    finally:
        await handler.close()
    assert {first.decision.source, second.decision.source} == {DecisionSource.MODEL, DecisionSource.CACHE}
    assert first.decision.scores == second.decision.scores and first.decision.model.version == classifier.info.version
    assert handler.infer.batcher.stats.items == 1, "identical content in flight is scored once"
    assert caught.value.reason is DeadLetterReason.INVALID_JSON
    assert telemetry.counts.decisions == dict.fromkeys(SOURCES, 0), "moderate() publishes nothing"


async def test_every_caller_of_a_failing_flight_gets_the_same_exception() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()
    error = ValueError("model down")

    async def failing() -> int:
        await release.wait()
        raise error

    leader = asyncio.create_task(flights.run("k", failing))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(flights.run("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(leader, *followers, return_exceptions=True)
    assert all(r is error for r in results)
    assert len(flights) == 0, "a failed flight lands: the next caller computes again"
    assert await flights.run("k", lambda: asyncio.sleep(0, 7)) == (7, False)


async def test_score_source_without_a_cache_computes_once_per_content_in_flight() -> None:
    source = ScoreSource(None, Telemetry(SOURCES))
    calls = 0
    release = asyncio.Event()

    async def compute() -> dict[str, float]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"scam": 0.5}

    waiting = [asyncio.create_task(source.get("hash", "v1", compute)) for _ in range(4)]
    while source.in_flight == 0:
        await asyncio.sleep(0)
    release.set()
    scored = await asyncio.gather(*waiting)
    await source.close()
    assert calls == 1 and sorted(s.computed for s in scored) == [False, False, False, True]
    assert source.in_flight == 0
