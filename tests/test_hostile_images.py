"""decode_image on hostile and awkward images: every input ends as an RGB image or an IngestError
with a specific reason. All images are made here with Pillow or by hand."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from moderator.ingest.errors import IngestError
from moderator.ingest.images import ImageLimits, decode_image
from moderator.ingest.schema import DeadLetterReason

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000, max_side=20_000)
DECODE = DeadLetterReason.IMAGE_DECODE
TOO_LARGE = DeadLetterReason.IMAGE_TOO_LARGE
UNSUPPORTED = DeadLetterReason.IMAGE_UNSUPPORTED
needs_webp = pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def reason_of(data: bytes, limits: ImageLimits = LIMITS) -> DeadLetterReason:
    with pytest.raises(IngestError) as caught:
        decode_image(data, limits)
    return caught.value.reason


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int, bit_depth: int = 8, colour: int = 2, idat: bytes = b"") -> bytes:
    """A PNG whose header claims ``width`` x ``height``; the pixel data is whatever ``idat`` is."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat or zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def real_png_bomb(side: int) -> bytes:
    """A complete, valid 1-bit PNG of side x side white pixels that compresses to a few kB."""
    row = b"\0" + b"\xff" * ((side + 7) // 8)
    squeeze = zlib.compressobj(9)
    idat = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    return png_declaring(side, side, bit_depth=1, colour=0, idat=idat)


def halves(size: tuple[int, int], left: str, right: str, mode: str = "RGB") -> Image.Image:
    """Left half one colour, right half another: shows where a rotation put things."""
    image = Image.new(mode, size, left)
    image.paste(Image.new(mode, (size[0] // 2, size[1]), right), (size[0] - size[0] // 2, 0))
    return image


def paletted() -> Image.Image:
    """An 8x8 paletted image of colour index 3 (dark grey) in a 16-colour palette."""
    image = Image.new("P", (8, 8), 3)
    image.putpalette(bytes(range(48)))
    return image


def close_to(pixel: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --- not images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"hello, world", b"\x00" * 1000, b'{"not": "an image"}', b"<html><body>hi</body></html>", b"\x89PNG"],
)
def test_non_image_bytes_are_a_decode_error(data: bytes) -> None:
    assert reason_of(data) == DECODE


def test_empty_bytes_are_a_decode_error() -> None:
    assert reason_of(b"") == DECODE


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b'\xef\xbb\xbf<?xml version="1.0"?>\n<!DOCTYPE svg><svg width="10" height="10"/>',
        b"  \n<SVG onload='x()'/>",
    ],
)
def test_svg_is_unsupported(data: bytes) -> None:
    assert reason_of(data) == UNSUPPORTED


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "PDF"])
def test_recognised_formats_outside_the_allowlist_are_unsupported(fmt: str) -> None:
    assert reason_of(encode(Image.new("RGB", (16, 16), "red"), fmt)) == UNSUPPORTED


def test_eps_never_reaches_ghostscript() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(pwned) print\n"
    assert reason_of(eps) == UNSUPPORTED


# --- size limits ---------------------------------------------------------------------------------


def test_byte_count_over_the_limit_is_too_large() -> None:
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    assert reason_of(data, ImageLimits(max_bytes=len(data) - 1, max_pixels=10**6, max_side=1000)) == TOO_LARGE


def test_huge_byte_count_is_rejected_before_parsing() -> None:
    assert reason_of(b"\xff\xd8\xff" + b"\0" * (LIMITS.max_bytes + 1)) == TOO_LARGE


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (65_535, 65_535), (2_001, 2_001), (30_000, 10)])
def test_declared_dimensions_over_the_limits_are_rejected_before_decoding(width: int, height: int) -> None:
    started = time.perf_counter()
    assert reason_of(png_declaring(width, height)) == TOO_LARGE
    assert time.perf_counter() - started < 0.5


def test_a_valid_decompression_bomb_is_rejected_before_decoding() -> None:
    bomb = real_png_bomb(20_000)  # 400 megapixels in a few kB
    assert len(bomb) < 100_000
    started = time.perf_counter()
    assert reason_of(bomb) == TOO_LARGE
    assert time.perf_counter() - started < 0.5


def test_limits_do_not_depend_on_pillows_global_bomb_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone switched Pillow's own check off
    assert reason_of(png_declaring(10_000, 10_000)) == TOO_LARGE
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # ... or made it absurdly strict
    assert decode_image(encode(Image.new("RGB", (64, 64)), "PNG"), LIMITS).size == (64, 64)


def test_rejection_emits_no_pillow_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason_of(png_declaring(10_000, 10_000))  # above Pillow's default warning threshold
    assert caught == []


def gif_with_first_frame(screen: tuple[int, int], frame: tuple[int, int, int, int]) -> bytes:
    """A tiny GIF whose first frame (left, top, width, height) may extend past its logical screen."""
    header = b"GIF89a" + struct.pack("<HH", *screen) + bytes([0x80, 0, 0]) + b"\x00\x00\x00\xff\xff\xff"
    comment = b"!\xfe\x05hello\x00"  # an extension before the frame, walked like Pillow walks it
    descriptor = b"," + struct.pack("<4H", *frame) + b"\x00"
    return header + comment + descriptor + b"\x02\x02\x44\x01\x00;"


@pytest.mark.parametrize("frame", [(0, 0, 20_000, 20_000), (0, 0, 10_000, 9_500), (15_000, 15_000, 5_000, 5_000)],
                         ids=["20000-square", "10000x9500", "offset-past-the-screen"])
def test_gif_frame_larger_than_its_screen_is_too_large_without_pillow_warnings(
    frame: tuple[int, int, int, int],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reason_of(gif_with_first_frame((64, 64), frame), ImageLimits(2_000_000, 40_000_000, 20_000)) \
            == TOO_LARGE
    assert caught == []


def test_gif_frame_larger_than_its_screen_within_the_limits_decodes() -> None:
    data = bytearray(encode(Image.new("P", (32, 32), 1), "GIF"))
    data[6:10] = struct.pack("<HH", 10, 10)  # the screen claims less than the frame covers
    assert decode_image(bytes(data), LIMITS).size == (32, 32)


@pytest.mark.parametrize(("width", "height"), [(1, 20_000), (20_000, 1), (1, 101)])
def test_extreme_aspect_ratios_are_unsupported(width: int, height: int) -> None:
    assert reason_of(encode(Image.new("L", (width, height), 128), "PNG")) == UNSUPPORTED


def test_aspect_ratio_at_the_limit_is_accepted_and_the_limit_is_a_setting() -> None:
    strip = encode(Image.new("L", (1, 100), 128), "PNG")
    assert decode_image(strip, LIMITS).size == (1, 100)
    assert reason_of(strip, ImageLimits(10**6, 10**6, 1000, max_aspect_ratio=10)) == UNSUPPORTED


def test_zero_width_is_a_decode_error() -> None:
    assert reason_of(png_declaring(0, 10)) == DECODE


# --- broken files --------------------------------------------------------------------------------


def _gradient(size: int = 256) -> Image.Image:
    return Image.radial_gradient("L").resize((size, size)).convert("RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_images_are_a_decode_error(fmt: str, keep: float) -> None:
    data = encode(_gradient(), fmt)
    assert reason_of(data[: int(len(data) * keep)]) == DECODE


def test_corrupt_png_data_is_a_decode_error() -> None:
    assert reason_of(png_declaring(64, 64, idat=b"definitely not zlib")) == DECODE


def test_png_with_bad_checksum_is_a_decode_error() -> None:
    data = bytearray(encode(_gradient(64), "PNG"))
    data[29] ^= 0xFF  # inside the IHDR chunk, so its CRC no longer matches
    assert reason_of(bytes(data)) == DECODE


# --- modes, frames, orientation -------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = decode_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), LIMITS)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((8, 8)), (255, 0, 0), tolerance=20)


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    data = encode(Image.new("I;16", (8, 8), 32_768), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert close_to(decode_image(data, LIMITS).getpixel((4, 4)), (128, 128, 128), tolerance=1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"),
        lambda: encode(Image.new("LA", (8, 8), (0, 0)), "PNG"),
        lambda: encode(paletted(), "GIF", transparency=3),
        lambda: encode(paletted(), "PNG", transparency=3),
        lambda: encode(Image.new("RGB", (8, 8), (0, 0, 0)), "PNG", transparency=(0, 0, 0)),
    ],
    ids=["RGBA", "LA", "GIF-P", "PNG-P", "RGB-colour-key"],
)
def test_transparency_is_composited_on_white(make: Callable[[], bytes]) -> None:
    image = decode_image(make(), LIMITS)
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)


def test_half_transparent_pixels_are_blended_with_white() -> None:
    image = decode_image(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG"), LIMITS)
    assert close_to(image.getpixel((4, 4)), (127, 127, 127), tolerance=2)


def _frames(*colours: str) -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), colour) for colour in colours]


def test_animated_gif_gives_its_first_frame() -> None:
    first, *rest = _frames("red", "blue", "lime")
    data = encode(first, "GIF", save_all=True, append_images=rest, duration=50)
    assert close_to(decode_image(data, LIMITS).getpixel((8, 8)), (255, 0, 0))


def test_animated_png_gives_its_first_frame() -> None:
    first, *rest = _frames("red", "blue")
    data = encode(first, "PNG", save_all=True, append_images=rest)
    assert decode_image(data, LIMITS).getpixel((8, 8)) == (255, 0, 0)


@needs_webp
def test_animated_webp_gives_its_first_frame() -> None:
    first, *rest = _frames("red", "blue")
    data = encode(first, "WEBP", save_all=True, append_images=rest, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close_to(decode_image(data, LIMITS).getpixel((8, 8)), (255, 0, 0))


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)


def test_exif_orientation_is_applied() -> None:
    # Orientation 6: the stored image must turn 90 degrees clockwise; its left half ends on top.
    image = decode_image(_with_orientation(halves((40, 20), "red", "blue"), 6), LIMITS)
    assert image.size == (20, 40)
    assert close_to(image.getpixel((10, 5)), (255, 0, 0), tolerance=40)
    assert close_to(image.getpixel((10, 35)), (0, 0, 255), tolerance=40)


@pytest.mark.parametrize("orientation", [0, 9, 65_535])
def test_invalid_exif_orientation_is_ignored(orientation: int) -> None:
    assert decode_image(_with_orientation(halves((40, 20), "red", "blue"), orientation), LIMITS).size == (40, 20)


def test_rotation_cannot_smuggle_a_side_past_the_limit() -> None:
    tall = _with_orientation(Image.new("RGB", (10, 300)), 6)
    assert reason_of(tall, ImageLimits(10**6, 10**6, max_side=200)) == TOO_LARGE


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB"])
def test_every_result_is_a_detached_rgb_image(mode: str) -> None:
    image = decode_image(encode(Image.new(mode, (12, 10)), "PNG"), LIMITS)
    assert (image.mode, image.size) == ("RGB", (12, 10))
    assert type(image) is Image.Image  # not a file-backed ImageFile holding the input


# --- fuzzing -------------------------------------------------------------------------------------

_SEEDS = [
    encode(_gradient(24), "PNG"),
    encode(_gradient(24), "JPEG"),
    encode(_gradient(24).convert("P"), "GIF"),
    encode(_gradient(24).convert("RGBA"), "PNG"),
    encode(_gradient(24), "JPEG", progressive=True, exif=Image.Exif()),
]
if features.check("webp"):
    _SEEDS.append(encode(_gradient(24), "WEBP"))


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid small image with bytes flipped, cut or spliced in."""
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
            if not data:
                break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _decode_or_reason(data: bytes) -> None:
    try:
        image = decode_image(data, LIMITS)
    except IngestError as exc:
        assert exc.reason in (DECODE, TOO_LARGE, UNSUPPORTED)
    else:
        assert image.mode == "RGB"
        assert image.width * image.height <= LIMITS.max_pixels


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # tolerated: the image still decodes
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_mutated_images_decode_or_fail_with_a_reason(data: bytes) -> None:
    _decode_or_reason(data)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\0\0\0\0WEBP", b""]),
    st.binary(max_size=512),
)
def test_random_bytes_behind_a_magic_number_decode_or_fail_with_a_reason(magic: bytes, tail: bytes) -> None:
    _decode_or_reason(magic + tail)
