"""The image reviewers see: the post's image decoded under the ingest limits and re-encoded small.

Re-encoding from decoded pixels bounds what Redis holds per item, and means the bytes served to
browsers are always a plain JPEG we produced, never the uploader's file (no polyglots, no SVG).
"""

from __future__ import annotations

import io
import logging

from moderator.ingest.errors import IngestError
from moderator.ingest.images import ImageLimits, decode_image

log = logging.getLogger(__name__)


def review_jpeg(data: bytes, limits: ImageLimits, max_side: int) -> bytes | None:
    """A JPEG of at most ``max_side`` pixels a side, or None if the image cannot be decoded."""
    try:
        image = decode_image(data, limits)
    except IngestError as exc:
        log.warning("no review image: %s", exc.reason.value)
        return None
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
