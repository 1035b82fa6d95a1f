"""Where a post's CPU time goes, stage by stage, on one thread; and the naive decode + resize loop.

Measured on the benchmark's own posts, in the same run as the pipeline: validating the record
(JSON, base64, content hash, on the event loop in the service), decoding at full size (what
a naive consumer does), decoding at the model's scale (what the service does), preprocessing
(resize, crop into uint8), tokenising, and the forward pass at the pipeline's batch size.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import orjson
from PIL import Image
from pydantic import BaseModel

from moderator.bench.workload import model_inputs
from moderator.ingest.images import decode_image
from moderator.ingest.validate import IngestLimits, validate_record
from moderator.model.base import Classifier, ModelInput, staged

# The naive loop resizes to a typical vision-encoder input; decoding dominates its cost anyway.
NAIVE_SIZE = (224, 224)


class StageProfile(BaseModel):
    """Milliseconds per post on one thread, and the naive decode + resize loop's throughput."""

    ms_per_post: dict[str, float]
    decode_loop_posts_per_s: float


def _per_item(fn: Callable[[object], object], items: Sequence[object]) -> float:
    """Milliseconds per item of ``fn`` over ``items`` (0 when there are none)."""
    if not items:
        return 0.0
    started = time.perf_counter()
    for item in items:
        fn(item)
    return 1000 * (time.perf_counter() - started) / len(items)


def profile_stages(classifier: Classifier, posts: Sequence[dict[str, object]], limits: IngestLimits,
                   batch_size: int) -> StageProfile:
    """Each stage timed on its own over ``posts``; the forward pass in batches of ``batch_size``."""
    model = staged(classifier)
    records = [orjson.dumps(p) for p in posts]
    started = time.perf_counter()
    asyncio.run(_validate_all(records, limits))
    validate = 1000 * (time.perf_counter() - started) / max(1, len(records))
    full = model_inputs(posts, limits)
    raw = _image_bytes(posts)
    side = model.min_decode_side()
    decode_full = _per_item(lambda data: decode_image(data, limits.image), raw)  # type: ignore[arg-type]
    naive = _per_item(lambda data: decode_image(data, limits.image).resize(NAIVE_SIZE, Image.Resampling.BICUBIC),
                      raw)  # type: ignore[arg-type]
    reduced = [decode_image(data, limits.image, side) for data in raw]
    decode = _per_item(lambda data: decode_image(data, limits.image, side), raw)  # type: ignore[arg-type]
    preprocess = _per_item(lambda image: model.prepare([ModelInput(None, image)]), reduced)  # type: ignore[arg-type]
    texts = [item.text for item in full if item.text]
    tokenise = _per_item(lambda text: model.prepare([ModelInput(text)]), texts)  # type: ignore[arg-type]
    inputs = [ModelInput(item.text, image) for item, image in zip(full, _reduced_or_none(full, reduced), strict=True)]
    parts = [model.prepare([item]) for item in inputs]
    batches = [parts[i : i + batch_size] for i in range(0, len(parts), batch_size)]
    model.infer(batches[0])  # warm-up at this shape
    forward = _per_item(model.infer, batches) * len(batches) / len(parts)  # type: ignore[arg-type]
    share = len(raw) / max(1, len(posts))  # per post, not per image: text-only posts decode nothing
    return StageProfile(
        ms_per_post={"validate (JSON, base64, content hash)": round(validate, 3),
                     "decode (full size)": round(decode_full * share, 3),
                     "decode (at the model's scale)": round(decode * share, 3),
                     "preprocess (resize, crop to uint8)": round(preprocess * share, 3),
                     "tokenise": round(tokenise * len(texts) / max(1, len(posts)), 3),
                     f"forward (batch {batch_size})": round(forward, 3)},
        decode_loop_posts_per_s=round(1000 / (naive * share), 1) if raw else 0.0,
    )


async def _validate_all(records: Sequence[bytes], limits: IngestLimits) -> None:
    for record in records:
        await validate_record(record, limits)


def _image_bytes(posts: Sequence[dict[str, object]]) -> list[bytes]:
    import base64

    return [base64.b64decode(p["image"]["data_b64"]) for p in posts if p.get("image")]  # type: ignore[index]


def _reduced_or_none(full: Sequence[ModelInput], reduced: Sequence[Image.Image]) -> list[Image.Image | None]:
    """The reduced-scale images in the places of the posts that have one."""
    it = iter(reduced)
    return [next(it) if item.image is not None else None for item in full]
