"""/metrics after a real run (lag, batch sizes, cache hits), and /ready following Redis going away and back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from moderator.broker import ensure_topics
from moderator.client import post_record, produce
from moderator.decisions.schema import Decision
from moderator.embedded.servers import redis_server
from moderator.service import ModerationService
from moderator.settings import Settings
from moderator.testing.samples import malformed_records
from tests.pipeline_helpers import collect, running_service

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


async def _ops_url(service: ModerationService, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while service.ops is None or not service.ops.serving:
        assert time.monotonic() < deadline, "the operations server did not start"
        await asyncio.sleep(0.02)
    return f"http://127.0.0.1:{service.ops.port}"


async def _scrape_until(client: httpx.AsyncClient, url: str, done: asyncio.Event) -> AsyncIterator[Samples]:
    while not done.is_set():
        yield _parse((await client.get(f"{url}/metrics")).text)
        await asyncio.sleep(0.05)


async def test_metrics_report_lag_batch_sizes_and_cache_hits_after_a_run(settings: Settings) -> None:
    # Few records per poll and few in flight: the backlog stays on the broker, so lag is visible mid-run.
    settings = settings.model_copy(update={"metrics_port": 0, "max_in_flight": 4, "fetch_max_records": 4})
    run = uuid.uuid4().hex
    posts = [{"post_id": f"m-{i}", "user_id": "u", "text": f"post {i} of {run}"} for i in range(90)]
    repeats = [{**p, "post_id": f"{p['post_id']}-again"} for p in posts[:30]]
    malformed = malformed_records("m-bad")[:3]
    await ensure_topics(settings)
    await produce(settings, [post_record(p) for p in posts] + [m.record for m in malformed])  # a backlog first

    max_lag: dict[str, float] = defaultdict(float)
    async with running_service(settings) as service, httpx.AsyncClient(timeout=10) as client:
        url = await _ops_url(service)
        done = asyncio.Event()

        async def watch() -> None:
            async for samples in _scrape_until(client, url, done):
                for labels, value in _series(samples, "moderator_consumer_lag").items():
                    max_lag[dict(labels)["partition"]] = max(max_lag[dict(labels)["partition"]], value)

        watcher = asyncio.create_task(watch())
        await collect(settings, settings.output_topic, len(posts))
        await produce(settings, [post_record(p) for p in repeats])
        decided = await collect(settings, settings.output_topic, len(posts) + len(repeats))
        await collect(settings, settings.dlq_topic, len(malformed))
        done.set()
        await watcher
        final = _parse((await client.get(f"{url}/metrics")).text)
        batches = service.pipeline.infer.batcher.stats

    per_partition = Counter(r.partition for r in await collect(settings, settings.input_topic, len(posts) + 3))
    lag = {dict(labels)["partition"]: value for labels, value in _series(final, "moderator_consumer_lag").items()}
    assert set(lag) == {str(p) for p in per_partition}, "a lag series for every assigned partition"
    assert all(value == 0 for value in lag.values()), "caught up at the end"
    assert any(value > 0 for value in max_lag.values()), "the backlog showed as lag while it was worked off"
    assert all(max_lag[str(p)] <= count + len(repeats) for p, count in per_partition.items())

    sources = Counter(Decision.model_validate_json(r.value).source.value for r in decided)
    assert final[("moderator_model_batch_size_count", ())] == batches.batches > 0
    assert final[("moderator_model_batch_size_sum", ())] == batches.items == sources["model"]
    assert final[("moderator_model_batch_size_bucket", (("le", "4.0"),))] == batches.batches, "no batch above 4"
    assert final[("moderator_model_batch_seconds_count", ())] == batches.batches
    assert final[("moderator_cache_hits_total", ())] == sources["cache"] >= len(repeats)
    assert final[("moderator_cache_misses_total", ())] == sources["model"]
    assert final[("moderator_end_to_end_seconds_count", ())] == len(decided)
    assert 0 < final[("moderator_end_to_end_seconds_sum", ())] < 60 * len(decided)
    assert sum(_series(final, "moderator_decisions_total").values()) == len(decided)
    dead = {dict(labels)["reason"]: value for labels, value in _series(final, "moderator_dead_letters_total").items()}
    assert dead == dict(Counter(m.reason.value for m in malformed))
    assert final[("moderator_records_consumed_total", ())] == len(posts) + len(repeats) + len(malformed)


async def _wait_ready(client: httpx.AsyncClient, url: str, ready: bool, timeout_s: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"{url}/ready")
        if (response.status_code == 200) is ready:
            body: dict[str, object] = response.json()
            assert body["ready"] is ready
            return body
        assert time.monotonic() < deadline, f"/ready stayed {response.status_code}: {response.text}"
        await asyncio.sleep(0.1)


async def test_ready_follows_redis_going_away_and_coming_back(settings: Settings, tmp_path: Path) -> None:
    redis = redis_server(data_dir=tmp_path)  # its own Redis: stopping it leaves other tests' Redis alone
    redis.start()
    try:
        settings = settings.model_copy(update={"metrics_port": 0, "redis_url": f"redis://127.0.0.1:{redis.port}/0"})
        async with running_service(settings) as service, httpx.AsyncClient(timeout=10) as client:
            url = await _ops_url(service)
            assert (await client.get(f"{url}/health")).status_code == 200
            body = await _wait_ready(client, url, ready=True)
            assert {name for name, check in body["checks"].items() if check["ok"]} == {  # type: ignore[union-attr]
                "broker", "redis", "model", "serving"}

            redis.stop()
            body = await _wait_ready(client, url, ready=False, timeout_s=10)
            checks = body["checks"]
            assert checks["redis"]["ok"] is False and checks["broker"]["ok"] is True  # type: ignore[index]
            assert (await client.get(f"{url}/health")).status_code == 200, "alive while a dependency is down"

            redis.start()
            await _wait_ready(client, url, ready=True, timeout_s=15)
    finally:
        redis.stop()

