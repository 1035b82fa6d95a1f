"""Batches from a real producer (librdkafka, behind most platforms' clients), compressed with every codec.

And what a batch the consumer cannot decode does: it is dead-lettered as one offset range, counted,
and skipped; every other record is still decided and the offsets move on.
"""

from __future__ import annotations

import aiokafka.codec
import pytest
from confluent_kafka import Producer

from moderator.broker import ensure_topics
from moderator.client import post_record
from moderator.decisions.schema import Decision
from moderator.ingest.schema import DeadLetter
from moderator.settings import Settings
from moderator.testing.samples import sample_posts
from tests.pipeline_helpers import collect, committed_and_log_offsets, decided_ids, running_service


def produce_with_librdkafka(settings: Settings, posts: list[dict[str, object]], codec: str,
                            partition: int | None = None) -> None:
    """Produce ``posts`` as librdkafka batches compressed with ``codec`` and wait for every ack."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "compression.type": codec,
                         "linger.ms": 50, "acks": "all", "enable.idempotence": False})
    failures: list[object] = []
    for post in posts:
        key, value, _ = post_record(post)
        producer.produce(settings.input_topic, value=value, key=key, on_delivery=lambda err, _msg:
                         failures.append(err) if err is not None else None,
                         **({"partition": partition} if partition is not None else {}))
    assert producer.flush(30) == 0 and failures == []


@pytest.mark.integration
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_every_post_of_a_compressed_librdkafka_batch_gets_its_decision(settings: Settings, codec: str) -> None:
    posts = sample_posts(12, seed=61, prefix=f"codec-{codec}")
    await ensure_topics(settings)
    produce_with_librdkafka(settings, posts, codec)
    async with running_service(settings) as service:
        decisions = [Decision.model_validate_json(r.value)
                     for r in await collect(settings, settings.output_topic, len(posts))]
    assert sorted(d.post_id for d in decisions) == sorted(str(p["post_id"]) for p in posts)
    assert service.counts.dead_letters == {}


@pytest.mark.integration
async def test_a_batch_the_consumer_cannot_decode_is_dead_lettered_as_a_range_and_the_rest_is_decided(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Snappy made unavailable to the consumer (as before the codec extras): the injected failure."""
    settings = settings.model_copy(update={"topic_partitions": 3})
    await ensure_topics(settings)
    before, snappy, after = (sample_posts(5, seed=62 + i, prefix=name)
                             for i, name in enumerate(["before", "snappy", "after"]))
    others = [sample_posts(4, seed=70 + p, prefix=f"other{p}") for p in (0, 2)]
    produce_with_librdkafka(settings, others[0], "none", partition=0)
    produce_with_librdkafka(settings, before, "none", partition=1)
    produce_with_librdkafka(settings, snappy, "snappy", partition=1)  # offsets 5..9 of partition 1
    produce_with_librdkafka(settings, after, "none", partition=1)
    produce_with_librdkafka(settings, others[1], "none", partition=2)
    decodable = before + after + others[0] + others[1]
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    async with running_service(settings) as service:
        letters = [DeadLetter.model_validate_json(r.value) for r in await collect(settings, settings.dlq_topic, 1)]
        decided = await decided_ids(settings, {str(p["post_id"]) for p in decodable})
        late = sample_posts(3, seed=80, prefix="late")  # the service is still consuming
        produce_with_librdkafka(settings, late, "none", partition=1)
        decided_late = await decided_ids(settings, {str(p["post_id"]) for p in decodable + late})
    assert [(lt.reason, lt.partition, lt.offset, lt.last_offset, lt.payload_b64) for lt in letters] == [
        ("undecodable_batch", 1, 5, 9, "")]
    assert "snappy" in letters[0].detail
    assert sorted(decided) == sorted(str(p["post_id"]) for p in decodable), "nothing lost, nothing undecodable"
    assert {str(p["post_id"]) for p in late} <= set(decided_late)
    assert service.counts.dead_letters == {"undecodable_batch": 1}
    assert service.telemetry.metrics.registry.get_sample_value("moderator_dead_letters_total",
                                                      {"reason": "undecodable_batch"}) == 1
    monkeypatch.undo()  # the check below reads the input topic, snappy batch included
    committed, log_end = await committed_and_log_offsets(settings, len(decodable) + len(snappy) + len(late))
    assert committed == log_end, "the skipped range is committed with the rest"
