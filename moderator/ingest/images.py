"""Decode untrusted image bytes into a bounded RGB image, or reject them with a reason."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on untrusted images."""

    max_bytes: int
    max_pixels: int
    max_side: int


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode, bound and normalise an image (EXIF orientation applied, RGB)."""
    if len(data) > limits.max_bytes:
        raise IngestError(DeadLetterReason.IMAGE_TOO_LARGE, f"{len(data)} bytes > limit {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels or max(width, height) > limits.max_side:
                raise IngestError(
                    DeadLetterReason.IMAGE_TOO_LARGE, f"{width}x{height} pixels exceeds the pixel limit"
                )
            image.load()
    except IngestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IngestError(DeadLetterReason.IMAGE_TOO_LARGE, f"decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IngestError(DeadLetterReason.IMAGE_DECODE, f"cannot decode image: {exc}") from exc
    return ImageOps.exif_transpose(image).convert("RGB")
