"""Validate one raw record: JSON → Post → image bytes → decoded image, or an IngestError with a reason."""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from PIL import Image
from pydantic import ValidationError

from moderator.cache.hashing import content_hash, normalize_text
from moderator.ingest.errors import IngestError
from moderator.ingest.fetch import FetchPolicy, fetch_image
from moderator.ingest.images import ImageLimits, decode_image
from moderator.ingest.schema import DeadLetterReason, ImageRef, Post
from moderator.model.base import ModelInput
from moderator.settings import Settings


@dataclass(frozen=True)
class IngestLimits:
    """Everything that bounds what one record may cost us."""

    max_message_bytes: int
    max_text_chars: int
    image: ImageLimits
    fetch: FetchPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_chars,
            image=ImageLimits(settings.max_image_bytes, settings.max_image_pixels, settings.max_image_side,
                              settings.max_image_aspect_ratio),
            fetch=FetchPolicy(
                timeout_s=settings.url_fetch_timeout_s,
                max_bytes=settings.max_image_bytes,
                allow_private=settings.url_allow_private,
            ),
        )


@dataclass(frozen=True)
class ValidPost:
    """A post that passed the schema checks, with its image bytes loaded and its content hash computed.

    The image is decoded only when the model needs it (a cache miss): repeats never pay for decoding.
    """

    post: Post
    image_bytes: bytes | None
    content_hash: str

    @property
    def post_id(self) -> str:
        """The post's id."""
        return self.post.post_id

    @property
    def metadata(self) -> dict[str, Any]:
        """The post's metadata (what policies select and match on)."""
        return self.post.metadata

    async def model_input(self, limits: IngestLimits) -> ModelInput:
        """Decode the image on a worker thread (bounded, hostile-input safe) and pair it with the text.

        The model sees the normalised text the content hash was computed from: posts that share a
        cache entry are exactly the posts that look the same to the model, so a disguised variant
        (zero-width characters, homoglyphs) can neither dodge the classifier nor poison the cache.
        """
        image: Image.Image | None = None
        if self.image_bytes is not None:
            image = await asyncio.to_thread(decode_image, self.image_bytes, limits.image)
        return ModelInput(text=normalize_text(self.post.text) or None, image=image)


def _schema_detail(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])


def parse_post(value: bytes | None, limits: IngestLimits) -> Post:
    """Parse and validate the JSON of one record (no I/O)."""
    if value is None:
        raise IngestError(DeadLetterReason.INVALID_JSON, "record has no value (tombstone)")
    if len(value) > limits.max_message_bytes:
        raise IngestError(DeadLetterReason.MESSAGE_TOO_LARGE, f"{len(value)} bytes > {limits.max_message_bytes}")
    try:
        data: Any = orjson.loads(value)  # bounded nesting depth, strict UTF-8
    except orjson.JSONDecodeError as exc:
        raise IngestError(DeadLetterReason.INVALID_JSON, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IngestError(DeadLetterReason.SCHEMA, f"expected a JSON object, got {type(data).__name__}")
    try:
        post = Post.model_validate(data)
    except ValidationError as exc:
        raise IngestError(DeadLetterReason.SCHEMA, _schema_detail(exc)) from exc
    if post.text is not None and len(post.text) > limits.max_text_chars:
        raise IngestError(DeadLetterReason.TEXT_TOO_LONG, f"text has {len(post.text)} characters > {limits.max_text_chars}")
    return post


def post_id_of(value: bytes | None) -> str | None:
    """Best-effort post_id of a record that failed validation, for the dead letter's key."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    post_id = data.get("post_id") if isinstance(data, dict) else None
    return post_id if isinstance(post_id, str) and 0 < len(post_id) <= 256 else None


def _decode_b64(data: str, limits: IngestLimits) -> bytes:
    if data.startswith("data:"):  # tolerate data URLs: data:image/png;base64,....
        data = data.partition(",")[2]
    if len(data) * 3 // 4 > limits.image.max_bytes:
        raise IngestError(DeadLetterReason.IMAGE_TOO_LARGE, f"inline image over {limits.image.max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IngestError(DeadLetterReason.IMAGE_DECODE, f"invalid base64: {exc}") from exc


async def image_bytes(image: ImageRef, limits: IngestLimits, client: httpx.AsyncClient | None = None) -> bytes:
    """The raw bytes of a post's image: inline base64 decoded, or fetched from a vetted URL."""
    if image.data_b64 is not None:
        return _decode_b64(image.data_b64, limits)
    return await fetch_image(image.url or "", limits.fetch, client)


async def validate_record(value: bytes | None, limits: IngestLimits,
                          client: httpx.AsyncClient | None = None) -> ValidPost:
    """The ingest stage for one record: parse, validate, load the image bytes, hash the content.

    ``client`` (from ``new_fetch_client``) is reused across records for URL images.
    """
    post = parse_post(value, limits)
    raw_image = await image_bytes(post.image, limits, client) if post.image is not None else None
    return ValidPost(post=post, image_bytes=raw_image, content_hash=content_hash(post.text, raw_image))
