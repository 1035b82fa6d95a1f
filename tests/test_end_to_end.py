"""From the posts topic to the decisions topic, through every stage, on the real broker and Redis."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import orjson

from moderator.client import post_record, produce
from moderator.decisions.schema import Decision
from moderator.evaldata import CATEGORIES
from moderator.ingest.schema import DeadLetter
from moderator.settings import Settings
from moderator.testing.samples import malformed_records, records_for, sample_posts
from tests.pipeline_helpers import collect, committed_and_log_offsets, running_service

DESIGN_FIELDS = {"post_id", "action", "scores", "reasons", "policy", "model", "source", "trace_id", "latency_ms",
                 "decided_at", "taxonomy"}


def _duplicates_of(posts: list[dict[str, object]], prefix: str) -> list[dict[str, object]]:
    """Same content under new post ids (and a disguised caption: zero-width space, other case)."""
    dups = []
    for i, post in enumerate(posts):
        dup = {**post, "post_id": f"{prefix}-{i}"}
        if isinstance(post.get("text"), str):
            dup["text"] = str(post["text"]).upper().replace(" ", " \u200b", 1)
        dups.append(dup)
    return dups


async def test_every_post_gets_one_decision_bad_ones_dead_letter_and_repeats_hit_cache(settings: Settings) -> None:
    originals = sample_posts(170, seed=3, prefix="orig")
    malformed = malformed_records()
    duplicates = _duplicates_of(originals[:40], "dup")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async with running_service(settings) as service:
        await produce(settings, [post_record(originals[0], traceparent)] + records_for(originals[1:])
                      + [m.record for m in malformed])
        first = await collect(settings, settings.output_topic, len(originals))
        await produce(settings, records_for(duplicates))
        decisions_raw = await collect(settings, settings.output_topic, len(originals) + len(duplicates))
        dead_raw = await collect(settings, settings.dlq_topic, len(malformed))
        await asyncio.sleep(0.5)  # one more commit interval

    assert len(first) == len(originals)
    decisions = [Decision.model_validate_json(r.value) for r in decisions_raw]
    by_id = Counter(d.post_id for d in decisions)
    expected_ids = {str(p["post_id"]) for p in originals + duplicates}
    assert set(by_id) == expected_ids and set(by_id.values()) == {1}, "exactly one decision per valid post"
    for record in decisions_raw:
        assert set(orjson.loads(record.value)) == DESIGN_FIELDS
        assert record.key.decode() == orjson.loads(record.value)["post_id"]
        assert dict(record.headers)["traceparent"].startswith(b"00-")
    first_decision = next(d for d in decisions if d.post_id == originals[0]["post_id"])
    assert first_decision.trace_id == traceparent.split("-")[1], "the post's trace continues into its decision"
    for decision in decisions:
        assert set(decision.scores) == set(CATEGORIES)
        # The provider mapping of every category behind a reason, from the policy's maps_to.
        assert set(decision.taxonomy) == {r.category for r in decision.reasons if r.category in CATEGORIES}
        assert all(0.0 <= s <= 1.0 for s in decision.scores.values())
        assert decision.policy.name == "default" and decision.model.version == service.classifier.info.version
        assert all(decision.scores[r.category] >= r.threshold for r in decision.reasons)

    by_post = {d.post_id: d for d in decisions}
    for original, dup in zip(originals[:40], duplicates, strict=True):
        repeat = by_post[str(dup["post_id"])]
        assert repeat.source == "cache", "a repeat of already-scored content is served from the cache"
        assert repeat.scores == by_post[str(original["post_id"])].scores
        assert repeat.action == by_post[str(original["post_id"])].action

    letters = [DeadLetter.model_validate_json(r.value) for r in dead_raw]
    assert len(letters) == len(malformed)
    got = Counter(letter.reason.value for letter in letters)
    assert got == Counter(m.reason.value for m in malformed)
    for letter in letters:
        assert letter.topic == settings.input_topic and letter.detail
        assert base64.b64decode(letter.payload_b64) in {m.record[1] for m in malformed}

    model_scored = sum(1 for d in decisions if d.source == "model")
    assert service.pipeline.infer.batcher.stats.batches < model_scored, "posts consumed together share forward passes"
    assert max(service.pipeline.infer.batcher.stats.sizes) <= settings.max_batch

    committed, log_end = await committed_and_log_offsets(settings, len(originals) + len(malformed) + len(duplicates))
    assert committed == log_end, "committed offsets cover everything consumed"
