"""Hot reload in the running pipeline: a valid edit changes the decisions of later posts, an invalid one
is rejected while the last good version keeps serving, a prompt edit rebuilds the classifier. The same
run checks policy selection by metadata, shadow disagreements and the scores recorded for backtests."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from moderator.client import produce
from moderator.decisions.schema import Decision
from moderator.pipeline.recording import ScoreLog, log_key
from moderator.policy.shadow import ShadowDisagreement
from moderator.settings import Settings
from moderator.testing.samples import records_for, sample_posts
from tests.conftest import ROOT
from tests.pipeline_helpers import collect, running_service

SHIPPED = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
ADS = """name: ads
version: "1"
applies_when: {metadata: surface, equals: ads}
rules:
  - {name: ads-review, when: {metadata: surface, equals: ads}, action: review, reason: ads are reviewed}
"""
CANDIDATE = """name: candidate
version: "1"
shadow_of: default
rules:
  - {name: strict, category: sexual, threshold: 0.0, action: block}
"""


def default_policy(version: str, threshold: str, extra_prompt: str | None = None) -> str:
    """The shipped default's categories with one rule, ``lockdown``, blocking at ``threshold``."""
    head, _ = SHIPPED.split("\nrules:\n")
    text = head.replace('version: "2"', f'version: "{version}"')
    if extra_prompt is not None:
        text = text.replace("      - a photo of a naked person\n", f"      - a photo of a naked person\n      - {extra_prompt}\n")
    # The tiny test model's scores are random: no always-blocked category, so only `lockdown` can block.
    text = text.replace("    always_block: true\n", "")
    return text + f"\nrules:\n  - {{name: lockdown, category: sexual, threshold: {threshold}, action: block}}\n"


def save(path: Path, text: str) -> None:
    """Write like an editor does: a temporary file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def feed_posts(count: int, seed: int, prefix: str) -> list[dict[str, object]]:
    posts = sample_posts(count, seed=seed, prefix=prefix)
    for post in posts:
        post["metadata"] = {"locale": "en", "surface": "feed"}
    return posts


async def test_policy_edits_reload_live_and_invalid_edits_keep_the_last_good_version(
        settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    default_file = directory / "default.yaml"
    default_file.write_text(default_policy("1", "1.0"), encoding="utf-8")
    (directory / "ads.yaml").write_text(ADS, encoding="utf-8")
    (directory / "candidate.yaml").write_text(CANDIDATE, encoding="utf-8")
    settings = settings.model_copy(update={"policy_dir": directory, "shadow_topic": f"shadow-{uuid.uuid4().hex[:8]}"})
    caplog.set_level(logging.INFO, logger="moderator.reload")

    feed = feed_posts(6, seed=5, prefix="feed")
    ads = sample_posts(2, seed=6, prefix="ad")
    for post in ads:
        post["metadata"] = {"surface": "ads"}
    async def decisions(count: int) -> dict[str, Decision]:
        records = await collect(settings, settings.output_topic, count)
        assert len(records) == count
        return {d.post_id: d for d in (Decision.model_validate_json(r.value) for r in records)}

    async with running_service(settings) as service:
        classifier, model_version = service.classifier, service.classifier.info.version

        # v1: `lockdown` blocks at sexual >= 1.0, which no score reaches; ads get the ads policy.
        await produce(settings, records_for(feed + ads))
        seen = await decisions(8)
        for post in feed:
            decision = seen[str(post["post_id"])]
            assert decision.scores["sexual"] < 1.0
            assert (decision.policy.name, decision.policy.version, decision.action) == ("default", "1", "allow")
        for post in ads:
            decision = seen[str(post["post_id"])]
            assert (decision.policy.name, decision.action) == ("ads", "review")
            assert [(r.rule, r.category, r.label) for r in decision.reasons] == [
                ("ads-review", "metadata:surface", "ads are reviewed")]
        # The shadow candidate would have blocked every feed post: counted and published, not acted on.
        counts = service.pipeline.observe.shadow.counts["candidate"]
        assert (counts.evaluated, counts.disagreed, counts.transitions) == (6, 6, {"allow->block": 6})
        metric = service.telemetry.metrics.registry.get_sample_value(
            "moderator_shadow_disagreements_total", {"shadow": "candidate", "live_action": "allow",
                                                     "shadow_action": "block"})
        assert metric == 6
        shadowed = [ShadowDisagreement.model_validate_json(r.value)
                    for r in await collect(settings, settings.shadow_topic, 6)]
        assert {d.post_id for d in shadowed} == {str(p["post_id"]) for p in feed}
        assert all((d.live.action, d.shadow.action, d.shadow.rule) == ("allow", "block", "strict") for d in shadowed)

        # v2, a threshold-only edit: live without restart, same classifier, cache still warm.
        save(default_file, default_policy("2", "0.0"))
        await until(lambda: service.policies.current.default_policy.version == "2", "v2 to go live")
        assert service.classifier is classifier and service.classifier.info.version == model_version
        repeats = [{**post, "post_id": f"again-{post['post_id']}"} for post in feed]
        await produce(settings, records_for(repeats))
        seen = await decisions(14)
        for post in repeats:
            decision = seen[str(post["post_id"])]
            assert (decision.policy.version, decision.action, decision.source) == ("2", "block", "cache")
            assert [r.rule for r in decision.reasons] == ["lockdown"]
        diff = "\n".join(r.getMessage() for r in caplog.records if "policies reloaded" in r.getMessage())
        assert "-  - {name: lockdown, category: sexual, threshold: 1.0, action: block}" in diff
        assert "+  - {name: lockdown, category: sexual, threshold: 0.0, action: block}" in diff

        # v3 is invalid: rejected with file:line:field, v2 keeps serving.
        invalid = default_policy("3", "1.5")
        default_file.write_text(invalid, encoding="utf-8")
        await until(lambda: service.reloader.rejected >= 1, "the invalid edit to be rejected")
        line = next(i for i, text in enumerate(invalid.splitlines(), 1) if "threshold: 1.5" in text)
        error = service.reloader.last_error or ""
        assert error.startswith(f"{default_file}:{line}: rules[0].threshold: "), error
        later = feed_posts(3, seed=7, prefix="later")
        await produce(settings, records_for(later))
        seen = await decisions(17)
        assert {(seen[str(p["post_id"])].policy.version, seen[str(p["post_id"])].action) for p in later} == {
            ("2", "block")}

        # v4 adds a prompt: the classifier is rebuilt, the model version (and cache key space) changes.
        save(default_file, default_policy("4", "1.0", extra_prompt="an explicit adult image"))
        await until(lambda: service.policies.current.default_policy.version == "4", "v4 to go live", 60)
        assert service.classifier is not classifier and service.classifier.info.version != model_version
        rescored = [{**post, "post_id": f"v4-{post['post_id']}"} for post in feed[:2]]
        await produce(settings, records_for(rescored))
        seen = await decisions(19)
        for post in rescored:
            decision = seen[str(post["post_id"])]
            assert (decision.policy.version, decision.action, decision.source) == ("4", "allow", "model")
            assert decision.model.version == service.classifier.info.version

    # Every decision was recorded with the scores and policy version it was decided with.
    redis = Redis.from_url(settings.redis_url)
    try:
        recorded = {r.post_id: r async for r in ScoreLog(redis, log_key(settings.consumer_group), 1000).read()}
    finally:
        await redis.aclose()
    assert set(recorded) == set(seen)
    for post_id, decision in seen.items():
        record = recorded[post_id]
        assert (record.scores, record.action, record.policy, record.version) == (
            decision.scores, decision.action, decision.policy.name, decision.policy.version)
        assert record.reasons == decision.reasons and record.model_version == decision.model.version
