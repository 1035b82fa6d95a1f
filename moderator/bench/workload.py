"""Benchmark posts: unique content (no accidental cache hits), as photo posts or small generated images.

``photos`` (the headline): every post carries a photo-like JPEG (1080x1080, 1080x1350, 1920x1080 or
1440x1080, 100-400 KB) and a 5-40 word caption. ``small``: unique captions, every second post with a
128x96 PNG, the workload of earlier runs. Photos are generated once per run into a small pool that
posts share, so memory stays bounded however many posts a run produces.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from moderator.bench.photos import caption, photo_set
from moderator.ingest.validate import IngestLimits, validate_record
from moderator.model.base import ModelInput
from moderator.testing.samples import CAPTIONS, b64, render_image

WorkloadName = Literal["photos", "small"]


@dataclass(frozen=True)
class Workload:
    """How to make ``count`` unique posts of one kind."""

    name: WorkloadName
    photos_b64: tuple[str, ...] = ()  # the shared photo pool (photos workload)

    @classmethod
    def make(cls, name: WorkloadName, photo_pool: int = 24) -> Workload:
        """The workload, its photos generated now (a few seconds) and shared by every post."""
        if name == "photos":
            return cls(name, tuple(b64(p) for p in photo_set(photo_pool, seed=7)))
        return cls(name)

    def posts(self, count: int, prefix: str, seed: int = 0) -> list[dict[str, object]]:
        """``count`` posts with unique captions."""
        if self.name == "small":
            return bench_posts(count, prefix, seed)
        rng = random.Random(seed)
        return [{"post_id": f"{prefix}-{i}", "user_id": f"u-{i % 97}", "text": f"{caption(rng)} ({seed}:{i})",
                 "metadata": {"surface": "feed"},
                 "image": {"data_b64": self.photos_b64[(seed + i) % len(self.photos_b64)]}}
                for i in range(count)]


def bench_posts(count: int, prefix: str, seed: int = 0, image_every: int = 2) -> list[dict[str, object]]:
    """``count`` posts with unique captions; every ``image_every``-th also carries a 128x96 image."""
    posts: list[dict[str, object]] = []
    for i in range(count):
        text, overlay = CAPTIONS[i % len(CAPTIONS)]
        post: dict[str, object] = {"post_id": f"{prefix}-{i}", "user_id": f"u-{i % 97}",
                                   "text": f"{text} ({seed}:{i})", "metadata": {"surface": "feed"}}
        if image_every and i % image_every == 0:
            post["image"] = {"data_b64": b64(render_image(overlay, seed * 1_000_003 + i, size=(128, 96)))}
        posts.append(post)
    return posts


def reposts(posts: list[dict[str, object]], prefix: str) -> list[dict[str, object]]:
    """The same content under new post ids: every one is a cache hit once the originals were scored."""
    return [{**p, "post_id": f"{prefix}-{i}"} for i, p in enumerate(posts)]


def model_inputs(posts: Sequence[dict[str, object]], limits: IngestLimits,
                 min_side: int | None = None) -> list[ModelInput]:
    """Decoded model inputs (at a reduced scale when ``min_side`` is given), for measuring the model alone."""
    import orjson

    from moderator.cache.hashing import normalize_text
    from moderator.ingest.images import decode_image

    async def decode() -> list[ModelInput]:
        valid = [await validate_record(orjson.dumps(p), limits) for p in posts]
        return [ModelInput(normalize_text(v.post.text) or None,
                           decode_image(v.image_bytes, limits.image, min_side) if v.image_bytes else None)
                for v in valid]

    return asyncio.run(decode())
