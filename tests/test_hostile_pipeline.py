"""Hostile input through the running service: outcomes that only the whole pipeline can show."""

from __future__ import annotations

from collections.abc import Sequence

from moderator.client import post_record, produce
from moderator.decisions.schema import Decision
from moderator.ingest.schema import DeadLetter
from moderator.model.base import ModelInput
from moderator.model.dual_encoder import DualEncoderClassifier
from moderator.policy.loader import load_policy
from moderator.settings import Settings
from moderator.testing.samples import records_for, sample_posts
from tests.conftest import ROOT
from tests.pipeline_helpers import WrappedClassifier, collect, running_service


async def test_one_post_id_with_different_contents_gets_a_decision_for_each_content(settings: Settings) -> None:
    first = {"post_id": "same-id", "user_id": "u1", "text": "Homemade pasta night!"}
    second = {"post_id": "same-id", "user_id": "u1", "text": "Earn $5000 a week from home, DM me now"}
    async with running_service(settings):
        await produce(settings, [post_record(first), post_record(second)])
        decisions = [Decision.model_validate_json(r.value) for r in await collect(settings, settings.output_topic, 2)]
    assert [d.post_id for d in decisions] == ["same-id", "same-id"]
    assert decisions[0].source == decisions[1].source == "model", "different content never shares cached scores"
    assert decisions[0].scores != decisions[1].scores


class GlitchOnOnePost(WrappedClassifier):
    """A real classifier that returns malformed scores for one caption (a bug, not an exception)."""

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        scores = self.inner.score_batch(items)
        return [{"violence": "not a number"} if item.text and "glitch" in item.text else s  # type: ignore[dict-item]
                for item, s in zip(items, scores, strict=True)]


async def test_an_unexpected_error_on_one_post_dead_letters_it_and_the_partition_keeps_moving(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"topic_partitions": 1})
    heads = load_policy(ROOT / "policies" / "default.yaml").head_spec()
    posts = sample_posts(30, seed=51, prefix="glitchy")
    posts[3] = {**posts[3], "text": "a glitch in the matrix"}
    async with running_service(settings, classifier=GlitchOnOnePost(DualEncoderClassifier(settings.model, heads))):
        await produce(settings, records_for(posts))
        decisions = await collect(settings, settings.output_topic, len(posts) - 1)
        letters = [DeadLetter.model_validate_json(r.value) for r in await collect(settings, settings.dlq_topic, 1)]
    assert {r.key.decode() for r in decisions} == {str(p["post_id"]) for p in posts} - {"glitchy-3"}
    assert letters[0].reason == "internal_error" and letters[0].post_id == "glitchy-3"
