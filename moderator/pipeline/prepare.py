"""Prepare: a post becomes the model's prepared input, on a pool of worker threads, never on the model thread.

Its own stage, beside inference and never inside it (Triton/DALI style). Pillow releases the GIL
while it decodes and resizes, and fast tokenizers run in Rust, so threads (one per core by default,
``MODERATOR_PREPARE_WORKERS``) prepare posts in parallel while the model thread runs the previous
batch: by the time a batch closes, its posts are uint8 pixels and token ids (``prepare`` of a
``StagedClassifier``), and the model stage only stacks them and runs the forward pass. JPEGs are
decoded at the model's scale; when the classifier decodes JPEGs on the GPU (nvjpeg), only their
header and bounds are checked here.

Text-only posts, for a classifier that can (``prepare_texts``), are prepared together: those that
queue while a batch is being tokenised form the next batch, one tokenizer call and one hand-off to
the pool per batch instead of per post, on one pool thread at a time (images keep the others).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from moderator.batching import BatchingConfig, MicroBatcher
from moderator.cache.hashing import normalize_text
from moderator.ingest.images import check_image, decode_image
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.model.base import Classifier, ModelInput, Prepared, staged
from moderator.model.prepare import cpu_count
from moderator.telemetry.instrument import Telemetry

_JPEG = b"\xff\xd8\xff"
# Never waits for company: the posts that queue while one batch is tokenised form the next.
TEXT_BATCHING = BatchingConfig(max_batch=256, max_wait_ms=0.0)


class Prepare:
    """``await prepare(post, classifier) -> Prepared``; a bad image raises ``IngestError`` (dead-lettered)."""

    def __init__(self, limits: IngestLimits, telemetry: Telemetry, workers: int | None = None) -> None:
        self.limits = limits
        self.telemetry = telemetry
        self.workers = workers or cpu_count()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="prepare")
        self.texts: MicroBatcher[tuple[Classifier, str | None], Prepared] = MicroBatcher.from_config(
            self._prepare_texts, TEXT_BATCHING)

    async def __call__(self, post: ValidPost, classifier: Classifier) -> Prepared:
        """Decode and prepare ``post`` for ``classifier`` on a pool thread."""
        if post.image_bytes is None and hasattr(staged(classifier), "prepare_texts"):
            return await self.texts.submit((classifier, post.post.text))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.prepare_now, classifier, post.post.text, post.image_bytes)

    async def _prepare_texts(self, items: Sequence[tuple[Classifier, str | None]]) -> list[Prepared]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.texts_now, items)

    def texts_now(self, items: Sequence[tuple[Classifier, str | None]]) -> list[Prepared]:
        """Prepare text-only posts on this thread, one tokenizer call per classifier among them (a
        policy reload may swap the classifier while posts for the old one still queue)."""
        prepared: list[Prepared | None] = [None] * len(items)
        rows_by_classifier: dict[int, list[int]] = {}
        for row, (classifier, _) in enumerate(items):
            rows_by_classifier.setdefault(id(classifier), []).append(row)
        with self.telemetry.stage("prepare"):
            for rows in rows_by_classifier.values():
                model = staged(items[rows[0]][0])
                texts = [normalize_text(items[row][1]) or None for row in rows]  # as prepare_now: the hashed text
                for row, part in zip(rows, model.prepare_texts(texts), strict=True):  # type: ignore[attr-defined]
                    prepared[row] = part
        return prepared  # type: ignore[return-value]

    def prepare_now(self, classifier: Classifier, text: str | None, image_bytes: bytes | None) -> Prepared:
        """Decode (bounded, hostile-input safe; IngestError on a bad image) and prepare one post, on this thread.

        The model sees the normalised text the content hash was computed from: posts that share a
        cache entry are exactly the posts that look the same to the model, so a disguised variant
        (zero-width characters, homoglyphs) can neither dodge the classifier nor poison the cache.
        """
        model = staged(classifier)
        text = normalize_text(text) or None
        if image_bytes is not None and image_bytes.startswith(_JPEG) and getattr(model, "decodes_jpeg", False):
            with self.telemetry.stage("decode"):
                check_image(image_bytes, self.limits.image)  # bounds and header here, pixels on the GPU
            with self.telemetry.stage("prepare"):
                return model.prepare_jpeg(text, image_bytes)  # type: ignore[attr-defined]
        image = None
        if image_bytes is not None:
            with self.telemetry.stage("decode"):
                image = decode_image(image_bytes, self.limits.image, min_side=model.min_decode_side())
        with self.telemetry.stage("prepare"):
            return model.prepare([ModelInput(text=text, image=image)])

    async def close(self) -> None:
        """Stop the workers; posts still queued are cancelled."""
        await self.texts.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
