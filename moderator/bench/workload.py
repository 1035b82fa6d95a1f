"""Benchmark posts: unique content (no accidental cache hits), small generated images."""

from __future__ import annotations

import asyncio

from moderator.ingest.validate import IngestLimits, validate_record
from moderator.model.base import ModelInput
from moderator.testing.samples import CAPTIONS, b64, render_image


def bench_posts(count: int, prefix: str, seed: int = 0, image_every: int = 2) -> list[dict[str, object]]:
    """``count`` posts with unique captions; every ``image_every``-th also carries a 128x96 image."""
    posts: list[dict[str, object]] = []
    for i in range(count):
        caption, overlay = CAPTIONS[i % len(CAPTIONS)]
        post: dict[str, object] = {"post_id": f"{prefix}-{i}", "user_id": f"u-{i % 97}",
                                   "text": f"{caption} ({seed}:{i})", "metadata": {"surface": "feed"}}
        if image_every and i % image_every == 0:
            post["image"] = {"data_b64": b64(render_image(overlay, seed * 1_000_003 + i, size=(128, 96)))}
        posts.append(post)
    return posts


def reposts(posts: list[dict[str, object]], prefix: str) -> list[dict[str, object]]:
    """The same content under new post ids: every one is a cache hit once the originals were scored."""
    return [{**p, "post_id": f"{prefix}-{i}"} for i, p in enumerate(posts)]


def model_inputs(posts: list[dict[str, object]], limits: IngestLimits) -> list[ModelInput]:
    """Decoded model inputs, so the bare-model benchmark measures the model alone."""
    import orjson

    async def decode() -> list[ModelInput]:
        valid = [await validate_record(orjson.dumps(p), limits) for p in posts]
        return [await v.model_input(limits) for v in valid]

    return asyncio.run(decode())
