"""The preparation pool: decode and prepare each post on worker threads, never on the model thread.

Pillow releases the GIL while it decodes and resizes, and fast tokenizers run in Rust, so threads
(one per core) prepare posts in parallel while the model thread runs the previous batch: by the
time a batch closes, its posts are uint8 pixels and token ids, and the model stage only stacks
them, copies them to the device and runs the forward pass.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from moderator.cache.hashing import normalize_text
from moderator.ingest.images import ImageLimits, check_image, decode_image
from moderator.model.base import ModelInput, Prepared, StagedClassifier
from moderator.model.prepare import cpu_count
from moderator.telemetry.stages import StageTimes


class PreparationPool:
    """Turns a post's text and image bytes into a classifier's prepared input on a thread pool."""

    def __init__(self, limits: ImageLimits, stages: StageTimes, workers: int | None = None) -> None:
        self.limits = limits
        self.stages = stages
        self.workers = workers or cpu_count()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="prepare")

    def prepare_now(self, classifier: StagedClassifier, text: str | None, image_bytes: bytes | None) -> Prepared:
        """Decode (bounded, hostile-input safe; IngestError on a bad image) and prepare one post.

        The model sees the normalised text the content hash was computed from, so posts that share
        a cache entry are exactly the posts that look the same to the model.
        """
        image = None
        text = normalize_text(text) or None
        if image_bytes is not None and getattr(classifier, "decodes_jpeg", False) and image_bytes[:3] == b"\xff\xd8\xff":
            with self.stages.timed("decode"):
                check_image(image_bytes, self.limits)  # bounds and header here, pixels on the GPU
            with self.stages.timed("prepare"):
                return classifier.prepare_jpeg(text, image_bytes)  # type: ignore[attr-defined]
        if image_bytes is not None:
            with self.stages.timed("decode"):
                image = decode_image(image_bytes, self.limits, min_side=classifier.min_decode_side())
        with self.stages.timed("prepare"):
            return classifier.prepare([ModelInput(text=text, image=image)])

    async def prepare(self, classifier: StagedClassifier, text: str | None, image_bytes: bytes | None) -> Prepared:
        """``prepare_now`` on a pool thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.prepare_now, classifier, text, image_bytes)

    def close(self) -> None:
        """Stop the workers; posts still queued are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)
