"""Decode untrusted image bytes into a bounded RGB image, or reject them with a reason.

Only four formats are decoded (JPEG, PNG, GIF, WebP), chosen by their magic bytes: Pillow's other
plugins (EPS runs Ghostscript, TIFF pulls in libtiff, ...) are attack surface a feed of web images
does not need. The plugin class is constructed directly, not through ``Image.open``, so the header
is parsed but nothing is decoded until our own limits have passed: Pillow's global
``MAX_IMAGE_PIXELS`` and its warnings play no part, whatever another module set them to.

Peak memory of one call is bounded by the limits: ``max_bytes`` of input plus at most about
12 bytes per pixel of ``max_pixels`` (the decoded frame, one conversion and the RGB result).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

from PIL import GifImagePlugin, Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, features

from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on untrusted images.

    ``max_aspect_ratio`` rejects degenerate strips (a 1x20000 line has no content worth scoring
    and breaks resizing for detectors) as ``image_unsupported``; 100:1 admits panoramas and long
    screenshots.
    """

    max_bytes: int
    max_pixels: int
    max_side: int
    max_aspect_ratio: float = 100.0


_Opener = Callable[[io.BytesIO], ImageFile.ImageFile]


def _webp_opener() -> _Opener | None:
    if not features.check("webp"):
        return None
    from PIL import WebPImagePlugin

    return WebPImagePlugin.WebPImageFile


# Supported formats: the plugin that parses each. An MPO (camera multi-picture JPEG) opens as JPEG.
_OPENERS: dict[str, _Opener | None] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "WEBP": _webp_opener(),
}

# Recognised but refused: a precise "image_unsupported" beats a vague "image_decode" for operators.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"qoif", "QOI"),
)
_ISOBMFF_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF"}
_WHITE = (255, 255, 255)


def _sniff(data: bytes) -> tuple[str, _Opener]:
    """The supported format of ``data`` and its parser, or an IngestError naming what it is instead."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        fmt = "PNG"
    elif data.startswith(b"\xff\xd8\xff"):
        fmt = "JPEG"
    elif data.startswith((b"GIF87a", b"GIF89a")):
        fmt = "GIF"
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        fmt = "WEBP"
    else:
        raise _unrecognised(data)
    opener = _OPENERS[fmt]
    if opener is None:
        raise IngestError(DeadLetterReason.IMAGE_UNSUPPORTED, f"{fmt} support is not built into Pillow here")
    return fmt, opener


def _unrecognised(data: bytes) -> IngestError:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") and b"<svg" in head:
        return IngestError(DeadLetterReason.IMAGE_UNSUPPORTED, "SVG is not accepted (scriptable, no raster)")
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            return IngestError(DeadLetterReason.IMAGE_UNSUPPORTED, f"{name} is not an accepted image format")
    if data[4:8] == b"ftyp" and data[8:12] in _ISOBMFF_BRANDS:
        name = _ISOBMFF_BRANDS[data[8:12]]
        return IngestError(DeadLetterReason.IMAGE_UNSUPPORTED, f"{name} is not an accepted image format")
    return IngestError(DeadLetterReason.IMAGE_DECODE, f"not an image (starts with {data[:8]!r})")


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise IngestError(DeadLetterReason.IMAGE_DECODE, f"invalid dimensions {width}x{height}")
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise IngestError(
            DeadLetterReason.IMAGE_TOO_LARGE,
            f"{width}x{height} exceeds {limits.max_pixels} pixels or {limits.max_side} per side",
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise IngestError(
            DeadLetterReason.IMAGE_UNSUPPORTED,
            f"aspect ratio of {width}x{height} exceeds {limits.max_aspect_ratio:g}:1",
        )


def _gif_sub_block(data: bytes, pos: int) -> tuple[int, bytes | None]:
    """One GIF data sub-block at ``pos`` read as Pillow reads it: None for the zero-length terminator."""
    if pos >= len(data) or not data[pos]:
        return pos + 1, None
    end = pos + 1 + data[pos]
    return end, data[pos + 1 : end]


def _gif_size(data: bytes) -> tuple[int, int]:
    """The size Pillow will give a GIF once it has read the first frame's descriptor.

    Pillow grows the logical screen to cover a first frame that extends past it, and runs its own
    bomb check (an error or a warning, by its global setting) while doing so, before our limits
    could be applied. This walks the blocks exactly as ``GifImageFile._seek(0)`` does, so the
    grown size is checked first.
    """
    width, height = struct.unpack_from("<HH", data, 6)
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        tag, pos = data[pos], pos + 1
        if tag == 0x3B:  # trailer
            break
        if tag == 0x2C:  # image descriptor: left, top, width, height
            if pos + 8 > len(data):
                break
            left, top, frame_w, frame_h = struct.unpack_from("<4H", data, pos)
            return max(width, left + frame_w), max(height, top + frame_h)
        if tag != 0x21:  # Pillow skips stray bytes between blocks
            continue
        label = data[pos] if pos < len(data) else 0
        pos, block = _gif_sub_block(data, pos + 1)
        if label == 0xFE:  # comment: read until the first empty sub-block
            while block:
                pos, block = _gif_sub_block(data, pos)
            continue
        if label == 0xFF and block is not None and block.startswith(b"NETSCAPE2.0"):
            pos, _ = _gif_sub_block(data, pos)
        while True:
            pos, block = _gif_sub_block(data, pos)
            if not block:
                break
    return width, height


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white and 16-bit samples scaled, not clipped."""
    if image.mode.startswith("I"):
        # 16-bit greyscale: a plain convert clips every value above 255 to white.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba)  # an RGBA mask pastes through its alpha band
        return flat
    return image.convert("RGB")


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode, bound and normalise an untrusted image: RGB, EXIF orientation applied, first frame.

    Raises IngestError: ``image_too_large`` (bytes, pixels or side over the limits, checked before
    any pixel is decoded), ``image_unsupported`` (a recognised format we do not accept, or an
    extreme aspect ratio), ``image_decode`` (empty, not an image, truncated or corrupt).
    """
    if not data:
        raise IngestError(DeadLetterReason.IMAGE_DECODE, "empty image")
    if len(data) > limits.max_bytes:
        raise IngestError(DeadLetterReason.IMAGE_TOO_LARGE, f"{len(data)} bytes > limit {limits.max_bytes}")
    fmt, opener = _sniff(data)
    if fmt == "GIF" and len(data) >= 13:
        _check_dimensions(*_gif_size(data), limits)
    try:
        with opener(io.BytesIO(data)) as image:  # parses the header only
            _check_dimensions(*image.size, limits)
            image.load()  # first frame only: later frames of GIF/WebP/APNG are never decoded
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except IngestError:
        raise
    except Image.DecompressionBombError as exc:  # only if another module tightened Pillow's global limit
        raise IngestError(DeadLetterReason.IMAGE_TOO_LARGE, f"{fmt}: {exc}") from exc
    except Exception as exc:
        # Pillow's parsers signal malformed input with many types (OSError, SyntaxError, EOFError,
        # struct.error, IndexError, ...): every one of them means "cannot decode this".
        raise IngestError(DeadLetterReason.IMAGE_DECODE, f"cannot decode {fmt}: {type(exc).__name__}: {exc}") from exc
