"""Synthetic posts for the demo, tests and benchmarks: generated images, captions, and malformed records."""

from __future__ import annotations

import base64
import io
import random
import zlib
from dataclasses import dataclass

import orjson
from PIL import Image, ImageDraw

from moderator.client import RawRecord, post_record
from moderator.ingest.schema import DeadLetterReason

CAPTIONS = [
    ("Sunset over the lake with friends", "a calm lake at sunset"),
    ("Homemade pasta night!", "dinner"),
    ("Earn $5000 a week from home, DM me now", "earn $5000 a week from home"),
    ("Cheap pills and coke, fast delivery", "buy cocaine here"),
    ("I will find you and hurt you", "you are dead"),
    ("Our puppy learned a new trick", "good dog"),
    ("Click the link to verify your bank account", "verify your account now"),
    ("Morning run in the park", "5 km done"),
]


def render_image(overlay: str, seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A PNG of a simple generated scene (sky, ground, sun, shapes) with ``overlay`` text drawn on it."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randint(90, 160), rng.randint(140, 200), rng.randint(200, 255)))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle([0, height * 2 // 3, width, height], fill=(rng.randint(40, 90), rng.randint(120, 170), 60))
    cx, cy = rng.randint(30, width - 30), rng.randint(20, height // 3)
    draw.ellipse([cx - 20, cy - 20, cx + 20, cy + 20], fill=(250, 220, 80))
    for _ in range(3):
        x, y = rng.randint(0, width - 60), rng.randint(height // 2, height - 30)
        draw.rectangle([x, y, x + rng.randint(20, 60), y + rng.randint(10, 30)],
                       fill=tuple(rng.randint(0, 255) for _ in range(3)))
    if overlay:
        draw.rectangle([8, 8, width - 8, 44], fill=(255, 255, 255))
        draw.text((14, 18), overlay, fill=(0, 0, 0), font_size=18)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sample_posts(count: int, seed: int = 0, prefix: str = "p") -> list[dict[str, object]]:
    """``count`` valid posts cycling through image+text, text-only and image-only."""
    rng = random.Random(seed)
    posts: list[dict[str, object]] = []
    for i in range(count):
        caption, overlay = CAPTIONS[i % len(CAPTIONS)]
        kind = i % 3
        post: dict[str, object] = {
            "post_id": f"{prefix}-{i}",
            "user_id": f"u-{rng.randrange(50)}",
            "created_at": "2026-11-25T10:00:00Z",
            "metadata": {"locale": "en", "surface": rng.choice(["feed", "comments", "ads"])},
        }
        if kind in (0, 1):
            post["text"] = f"{caption} #{i}"
        if kind in (0, 2):
            post["image"] = {"data_b64": b64(render_image(overlay, seed * 100_003 + i))}
        posts.append(post)
    return posts


@dataclass(frozen=True)
class Malformed:
    """A record that must land on the dead-letter topic with ``reason``."""

    name: str
    reason: DeadLetterReason
    record: RawRecord


def _bomb_png() -> bytes:
    """A tiny PNG that declares 100k x 100k pixels: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR chunk CRC stays valid
    return bytes(data)


def malformed_records(prefix: str = "bad") -> list[Malformed]:
    """One record of each kind of bad input the ingest stage must dead-letter."""
    png = render_image("", 1)
    cases: list[tuple[str, DeadLetterReason, bytes | None]] = [
        ("invalid json", DeadLetterReason.INVALID_JSON, b"{not json"),
        ("not utf-8", DeadLetterReason.INVALID_JSON, b"\xff\xfe\x00garbage"),
        ("json array", DeadLetterReason.SCHEMA, b"[1, 2, 3]"),
        ("missing post_id", DeadLetterReason.SCHEMA, orjson.dumps({"user_id": "u", "text": "hi"})),
        ("no text or image", DeadLetterReason.SCHEMA, orjson.dumps({"post_id": f"{prefix}-empty", "user_id": "u"})),
        ("wrong types", DeadLetterReason.SCHEMA, orjson.dumps({"post_id": 5, "user_id": ["u"], "text": 3})),
        ("bad base64", DeadLetterReason.IMAGE_DECODE,
         orjson.dumps({"post_id": f"{prefix}-b64", "user_id": "u", "image": {"data_b64": "%%%not-base64%%%"}})),
        ("not an image", DeadLetterReason.IMAGE_DECODE,
         orjson.dumps({"post_id": f"{prefix}-txt", "user_id": "u", "image": {"data_b64": b64(b"hello, not an image")}})),
        ("truncated png", DeadLetterReason.IMAGE_DECODE,
         orjson.dumps({"post_id": f"{prefix}-trunc", "user_id": "u", "image": {"data_b64": b64(png[: len(png) // 2])}})),
        ("decompression bomb", DeadLetterReason.IMAGE_TOO_LARGE,
         orjson.dumps({"post_id": f"{prefix}-bomb", "user_id": "u", "image": {"data_b64": b64(_bomb_png())}})),
        ("loopback url", DeadLetterReason.URL_BLOCKED,
         orjson.dumps({"post_id": f"{prefix}-ssrf", "user_id": "u", "image": {"url": "http://127.0.0.1:1/x.png"}})),
        ("file url", DeadLetterReason.URL_BLOCKED,
         orjson.dumps({"post_id": f"{prefix}-file", "user_id": "u", "image": {"url": "file:///etc/passwd"}})),
    ]
    return [Malformed(name, reason, (None, value, [])) for name, reason, value in cases]


def records_for(posts: list[dict[str, object]]) -> list[RawRecord]:
    """Posts as Kafka records."""
    return [post_record(p) for p in posts]
