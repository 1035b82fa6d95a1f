"""The running service queues the posts its policy sends to review (runner.build_service wiring)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from moderator.client import post_record, produce
from moderator.review.models import item_id_for
from moderator.review.queue import RedisReviewQueue
from moderator.settings import Settings
from tests.conftest import ROOT
from tests.pipeline_helpers import collect, running_service
from tests.review_helpers import post_json

pytestmark = pytest.mark.integration


def _review_everything_policy(directory: Path, name: str) -> Path:
    """The default policy renamed, with one rule that sends every post to review."""
    text = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^name: default$", f"name: {name}", text)
    # Without always_block, no category needs its block rule, so one review rule can take every post.
    text = text.replace("    always_block: true\n", "")
    text = text[: text.index("\nrules:")] + "\nrules:\n  - {name: review-all, category: scam, threshold: 0.0, action: review}\n"
    directory.mkdir()
    (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    return directory


async def test_posts_the_policy_sends_to_review_wait_in_its_queue(settings: Settings, tmp_path: Path) -> None:
    policy = f"reviewall{uuid.uuid4().hex[:6]}"
    settings = settings.model_copy(update={"policy_dir": _review_everything_policy(tmp_path / "policies", policy)})
    posts = [post_json("rq-both"), post_json("rq-text", image=False), post_json("rq-image", text=None)]
    posts = [{**p, "post_id": f"{p['post_id']}-{policy}"} for p in posts]

    async with running_service(settings) as service:
        assert isinstance(service.pipeline.review.sink, RedisReviewQueue), "build_service queues reviews in Redis by default"
        await produce(settings, [post_record(p) for p in posts])
        decisions = [orjson.loads(r.value) for r in await collect(settings, settings.output_topic, len(posts))]

    assert {d["action"] for d in decisions} == {"review"}
    redis = Redis.from_url(settings.redis_url)
    try:
        queue = RedisReviewQueue(redis, settings)
        waiting = {e.post_id: e for e in await queue.waiting(policy)}
        assert set(waiting) == {str(p["post_id"]) for p in posts}
        assert {pid: e.has_image for pid, e in waiting.items()} == {
            str(p["post_id"]): "image" in p for p in posts}
        assert waiting[str(posts[0]["post_id"])].rules == ["review-all"]
        image = await queue.image(item_id_for(str(posts[2]["post_id"])))
        assert image is not None and image[:3] == b"\xff\xd8\xff"  # a JPEG we encoded
    finally:
        await redis.aclose()
