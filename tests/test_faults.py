"""Fault injection against the real embedded broker and Redis: crashes, outages, bad batches, rebalances."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import boto3
import pytest

from moderator.client import post_record, produce, read_topic
from moderator.embedded.servers import EmbeddedServer, free_port, redis_server, tansu_server
from moderator.ingest.schema import DeadLetter
from moderator.model.base import Classifier, ModelInput
from moderator.model.dual_encoder import DualEncoderClassifier
from moderator.policy.loader import load_policy
from moderator.settings import Settings
from moderator.testing.samples import records_for, sample_posts
from tests.conftest import ROOT, Servers, make_settings
from tests.pipeline_helpers import WrappedClassifier, collect, committed_and_log_offsets, decided_ids, running_service
from tests.service_process import ServiceProcess

pytestmark = pytest.mark.slow


async def test_kill_9_mid_stream_then_restart_leaves_no_post_undecided(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"max_in_flight": 32, "fetch_max_records": 16})
    posts = sample_posts(300, seed=21, prefix="kill9")
    await produce(settings, records_for(posts))
    first = ServiceProcess(settings, tmp_path / "first.log")
    first.start()
    try:
        await collect(settings, settings.output_topic, 50, timeout_s=90)
        first.kill()
    finally:
        first.stop()
    seen_before = [r async for r in read_topic(settings, settings.output_topic, timeout_s=10, idle_s=1.0)]
    assert len(seen_before) < len(posts), "killed mid-stream"
    second = ServiceProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        ids = await decided_ids(settings, {str(p["post_id"]) for p in posts}, timeout_s=120)
    finally:
        second.stop()
    assert set(ids) == {p["post_id"] for p in posts}, second.log()


async def test_sigterm_drains_in_flight_posts_publishes_and_commits(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"max_in_flight": 64, "fetch_max_records": 32, "commit_interval_ms": 60_000})
    posts = sample_posts(300, seed=22, prefix="term")
    await produce(settings, records_for(posts))
    service = ServiceProcess(settings, tmp_path / "serve.log")
    service.start()
    try:
        await collect(settings, settings.output_topic, 40, timeout_s=90)
        assert service.terminate() == 0, service.log()
    finally:
        service.stop()
    decided = [r.key.decode() async for r in read_topic(settings, settings.output_topic, timeout_s=10, idle_s=1.0)]
    committed, _ = await committed_and_log_offsets(settings, len(posts))
    # Commits were only periodic every minute: everything committed was committed by the drain on SIGTERM,
    # and exactly the drained posts were decided - nothing in flight was dropped or decided twice.
    assert sum(o or 0 for o in committed.values()) == len(decided) == len(set(decided)) > 0, service.log()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A Redis of this test's own, so stopping it does not disturb other tests."""
    server = redis_server(data_dir=tmp_path, log_dir=tmp_path, appendonly=True)
    server.start()
    yield server
    server.stop()


async def test_redis_outage_mid_stream_loses_no_post_and_cache_recovers(
    servers: Servers, tiny_clip_dir: Path, own_redis: EmbeddedServer
) -> None:
    settings = make_settings(servers, model=str(tiny_clip_dir), redis_url=f"redis://127.0.0.1:{own_redis.port}/0",
                             max_in_flight=32, fetch_max_records=16)
    posts = sample_posts(240, seed=23, prefix="redis")
    async with running_service(settings) as service:
        await produce(settings, records_for(posts[:120]))
        await collect(settings, settings.output_topic, 30, timeout_s=90)
        own_redis.stop()
        await produce(settings, records_for(posts[120:]))
        await collect(settings, settings.output_topic, 150, timeout_s=90)
        own_redis.start()
        ids = await decided_ids(settings, {str(p["post_id"]) for p in posts}, timeout_s=90)
        errors_during_outage = service.counts.cache_errors
        # New content scored after Redis is back is cached again: its repost is a cache hit.
        fresh = {"post_id": "redis-fresh", "user_id": "u", "text": "scored after the outage"}
        await produce(settings, [post_record(fresh)])
        await collect(settings, settings.output_topic, len(ids) + 1)
        await produce(settings, [post_record({**fresh, "post_id": "redis-repost"})])
        decisions = await collect(settings, settings.output_topic, len(ids) + 2)
    assert set(ids) == {p["post_id"] for p in posts}
    assert errors_during_outage > 0, "the outage was noticed (degraded mode), not silently skipped"
    last = next(r for r in decisions if r.key == b"redis-repost")
    assert b'"source":"cache"' in last.value, "the cache works again after Redis came back"


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """Tansu storing to a local S3 (moto), so topics, records and offsets survive a broker restart."""
    s3_port = free_port()
    s3 = EmbeddedServer("moto", [sys.executable, "-m", "moto.server", "-p", str(s3_port)], s3_port,
                        log_path=tmp_path / "moto.log")
    s3.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", aws_access_key_id="x",
                 aws_secret_access_key="x", region_name="us-east-1").create_bucket(Bucket="tansu")
    env = {"AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    broker = tansu_server(storage_engine="s3://tansu/", env=env, log_dir=tmp_path)
    broker.start()
    yield broker
    broker.stop()
    s3.stop()


async def test_broker_restart_mid_stream_recovers_without_manual_action(
    servers: Servers, tiny_clip_dir: Path, durable_broker: EmbeddedServer
) -> None:
    settings = make_settings(servers, model=str(tiny_clip_dir), kafka_bootstrap=f"127.0.0.1:{durable_broker.port}",
                             max_in_flight=32, fetch_max_records=16)
    # Tansu on S3 lists a partition's objects on every fetch, so fewer posts keep this test quick; the
    # restart still lands mid-stream, with posts in flight and more produced after it.
    posts = sample_posts(100, seed=24, prefix="broker")
    async with running_service(settings):
        await produce(settings, records_for(posts[:60]))
        await collect(settings, settings.output_topic, 15, timeout_s=90)
        durable_broker.kill()
        await asyncio.sleep(2.0)
        durable_broker.start()
        await produce(settings, records_for(posts[60:]))
        ids = await decided_ids(settings, {str(p["post_id"]) for p in posts}, timeout_s=120)
    assert set(ids) == {p["post_id"] for p in posts}


class PoisonSensitive(WrappedClassifier):
    """A real classifier that fails on any batch containing a poison caption."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(inner)
        self.batch_sizes: list[int] = []

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        self.batch_sizes.append(len(items))
        if any(item.text and "poison" in item.text.lower() for item in items):
            raise RuntimeError("kernel failure")
        return self.inner.score_batch(items)


async def test_model_error_splits_the_batch_and_dead_letters_only_the_failing_post(settings: Settings) -> None:
    heads = load_policy(ROOT / "policies" / "default.yaml").head_spec()
    classifier = PoisonSensitive(DualEncoderClassifier(settings.model, heads))
    posts = sample_posts(40, seed=25, prefix="poison")
    posts[17] = {**posts[17], "text": "POISON pill caption"}
    settings = settings.model_copy(update={"max_batch": 16, "max_wait_ms": 200})
    async with running_service(settings, classifier=classifier):
        await produce(settings, records_for(posts))
        decisions = await collect(settings, settings.output_topic, len(posts) - 1)
        letters = await collect(settings, settings.dlq_topic, 1)
    assert {r.key.decode() for r in decisions} == {p["post_id"] for p in posts} - {"poison-17"}
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert letter.reason == "model_error" and letter.post_id == "poison-17"
    assert 1 in classifier.batch_sizes and max(classifier.batch_sizes) > 1, "split down to the failing post"


async def test_rebalance_to_a_second_instance_loses_nothing_and_decides_each_post_once(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_in_flight": 32, "fetch_max_records": 16})
    posts = sample_posts(400, seed=26, prefix="rebal")
    async with running_service(settings) as first:
        await produce(settings, records_for(posts))
        await collect(settings, settings.output_topic, 60, timeout_s=90)
        async with running_service(settings) as second:
            ids = await decided_ids(settings, {str(p["post_id"]) for p in posts}, timeout_s=120)
            await asyncio.sleep(1.0)
            both_worked = first.counts.consumed > 0 and second.counts.consumed > 0
    everything = [r.key.decode() async for r in read_topic(settings, settings.output_topic, timeout_s=10, idle_s=1.0)]
    assert set(ids) == {p["post_id"] for p in posts}
    assert both_worked, "the group rebalanced partitions onto the second instance"
    doubles = {k: n for k, n in Counter(everything).items() if n > 1}
    assert not doubles, f"revoked partitions were drained and committed before hand-over: {doubles}"


async def test_without_redis_configured_every_post_is_decided_and_nothing_waits_on_a_cache_write(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"redis_url": "", "max_wait_ms": 200.0})
    posts = sample_posts(20, seed=25, prefix="nocache")
    twins = [{**p, "post_id": f"{p['post_id']}-twin"} for p in posts]
    async with running_service(settings) as service:
        await produce(settings, records_for(posts + twins))
        decisions = await collect(settings, settings.output_topic, len(posts) + len(twins))
        stats = service.counts
    assert {r.key.decode() for r in decisions} == {str(p["post_id"]) for p in posts + twins}
    assert stats.cache_errors == 0 and service.pipeline.scores.cache is None
    assert stats.decisions["model"] + stats.decisions["cache"] == len(posts) + len(twins)
    assert service.pipeline.scores.in_flight == 0, "nothing is left waiting for a cache write that will never happen"
