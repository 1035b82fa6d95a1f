"""Photo-like JPEGs for benchmarks: the sizes and byte counts of real photo posts, generated, deterministic.

Real feeds carry camera and phone photos: 1080x1080, 1080x1350 (portrait), 1920x1080 and 1440x1080,
100-400 KB as JPEG. Decoding them is most of a post's CPU cost, so a benchmark of small synthetic
images hides it. These are smooth colour fields (sky, light falloff) with shapes and sensor-like
noise, so JPEG spends its bytes as on a photo. Torch-free and pydantic-free: the GPU benchmark
uses it on a machine with only torch, transformers, numpy and Pillow.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PHOTO_SIZES: tuple[tuple[int, int], ...] = ((1080, 1080), (1080, 1350), (1920, 1080), (1440, 1080))
MIN_BYTES, MAX_BYTES = 100_000, 400_000

_WORDS = (
    "sunset", "beach", "friends", "weekend", "coffee", "morning", "city", "lights", "hiking", "trail", "dog",
    "park", "birthday", "cake", "family", "dinner", "road", "trip", "mountains", "lake", "concert", "crowd",
    "street", "food", "market", "garden", "flowers", "rain", "window", "reading", "new", "shoes", "gym",
    "progress", "graduation", "day", "snow", "cabin", "cozy", "night", "skyline", "bridge", "train", "station",
    "art", "museum", "vintage", "car", "festival", "fireworks", "puppy", "kitten", "homemade", "pasta",
)


def photo_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A ``size`` (width, height) photo-like JPEG of 100-400 KB; the same seed gives the same bytes."""
    rng = np.random.default_rng(seed)
    width, height = size
    # Low-frequency colour field: a 4x4 grid of colours upsampled smoothly, like sky and light falloff.
    grid = Image.fromarray(rng.integers(20, 235, size=(4, 4, 3), dtype=np.uint8))
    image = grid.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    shapes = random.Random(seed)
    for _ in range(12):
        x, y = shapes.randrange(width), shapes.randrange(height)
        w, h = shapes.randint(width // 20, width // 4), shapes.randint(height // 20, height // 4)
        colour = tuple(shapes.randint(0, 255) for _ in range(3))
        (draw.ellipse if shapes.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3))  # soft edges, as a lens gives
    pixels = np.asarray(image, dtype=np.int16)
    sigma = 9
    for _ in range(6):  # adjust the grain until the JPEG lands in the byte range of real photos
        noise = rng.normal(0, sigma, size=(height, width, 1)).astype(np.int16)
        data = _jpeg(np.clip(pixels + noise, 0, 255).astype(np.uint8))
        if len(data) > MAX_BYTES:
            sigma = max(1, sigma * 2 // 3)
        elif len(data) < MIN_BYTES:
            sigma = sigma * 3 // 2
        else:
            break
    return data


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def photo_set(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct photos cycling through the four photo sizes."""
    return [photo_jpeg(seed * 100_003 + i, PHOTO_SIZES[i % len(PHOTO_SIZES)]) for i in range(count)]


def caption(rng: random.Random) -> str:
    """A 5-40 word caption."""
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 40)))
