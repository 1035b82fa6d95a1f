"""Regenerate the shipped labeled set: ``python -m tools.evaldata.generate`` from the repository root.

Every phrasing of ``phrases.py`` becomes several posts: the phrasing as the caption (alone or over a
textless picture), the phrasing only rendered inside an image under a neutral caption ("lol"),
for some phrasings both at once, and for some a disguised copy (leetspeak, spaced or dotted
letters) as caption or image. Benign near misses are built the same way, next to textless generated
pictures. Splits are drawn by phrasing (half train, a quarter dev, a quarter test per group, the
second batch of ``phrases_more.py`` and the third of ``third/`` each apart from the others), so a
phrasing and its variants never straddle splits; ``metadata.phrasing`` names the phrasing a post
was built from.

Deterministic for a given Pillow version; images are small JPEGs drawn with Pillow's bundled font.
This is a development tool: the service never imports it, it only reads the files it writes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from moderator.evaldata import CATEGORIES, SPLIT_PATHS, LabeledPost, write_labeled
from moderator.ingest.schema import ImageRef, Post
from tools.evaldata.phrases import ALSO, BENIGN, HARMFUL, NEUTRAL_CAPTIONS, PHOTO_CAPTIONS
from tools.evaldata.phrases_more import BENIGN_MORE, HARMFUL_MORE
from tools.evaldata.third import BENIGN_THIRD, HARMFUL_THIRD

SIZES = [(256, 160), (224, 224), (288, 144)]
SPLIT_SHARES = (("train", 0.5), ("dev", 0.25), ("test", 0.25))
LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same glyphs on every machine, no system fonts needed.
    return ImageFont.load_default(size=size)


def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    ramp = np.linspace(0, 1, size[1])[:, None, None]
    pixels = np.array(top) * (1 - ramp) + np.array(bottom) * ramp
    return Image.fromarray(pixels.repeat(size[0], axis=1).astype(np.uint8))


def _scene(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A generated landscape (sky, sun, hills) or a still life of coloured shapes. No text."""
    if rng.random() < 0.5:
        canvas = _gradient(size, (rng.randint(60, 140), rng.randint(120, 200), 255),
                           (255, rng.randint(170, 230), rng.randint(120, 200)))
        draw = ImageDraw.Draw(canvas)
        cx, cy, r = rng.randint(30, size[0] - 30), rng.randint(20, size[1] // 2), rng.randint(12, 28)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 230, 120))
        for layer in range(3):
            base = int(size[1] * (0.55 + 0.13 * layer))
            period = rng.randint(25, 60)
            points = [(x, base - int(18 * np.sin(x / period + layer))) for x in range(0, size[0] + 1, 16)]
            draw.polygon([(0, size[1]), *points, (size[0], size[1])], fill=(40 + 30 * layer, 110 + 35 * layer, 50))
        return canvas
    canvas = Image.new("RGB", size, tuple(rng.randint(120, 240) for _ in range(3)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(3, 7)):
        x, y = rng.randint(0, size[0]), rng.randint(0, size[1])
        r = rng.randint(10, 50)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=colour)
    return canvas


def _draw_text(canvas: Image.Image, text: str, rng: random.Random, fill: tuple[int, int, int], *,
               stroke: bool = False, left: bool = False) -> None:
    width, height = canvas.size
    size = rng.choice([16, 18, 20])
    font = _font(size)
    lines = textwrap.wrap(text, width=max(8, int((width - 16) / (size * 0.52))))
    draw = ImageDraw.Draw(canvas)
    y = max(6, (height - len(lines) * (size + 6)) // 2 + rng.randint(-10, 10))
    for line in lines:
        x = 8 if left else max(4, (width - draw.textlength(line, font=font)) / 2)
        draw.text((x, y), line, font=font, fill=fill, stroke_width=2 if stroke else 0, stroke_fill=(0, 0, 0))
        y += size + 6


def _card(text: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    canvas = Image.new("RGB", size, tuple(rng.randint(170, 255) for _ in range(3)))
    _draw_text(canvas, text, rng, tuple(rng.randint(0, 60) for _ in range(3)))
    return canvas


def _poster(text: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    canvas = _gradient(size, tuple(rng.randint(0, 70) for _ in range(3)), tuple(rng.randint(30, 120) for _ in range(3)))
    _draw_text(canvas, text.upper() if rng.random() < 0.5 else text, rng, (255, 255, rng.randint(140, 255)))
    return canvas


def _meme(text: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    canvas = _scene(size, rng)
    _draw_text(canvas, text.upper(), rng, (255, 255, 255), stroke=True)
    return canvas


def _screenshot(text: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A chat or social-media screenshot: white, a grey header bar, dark left-aligned text."""
    canvas = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(canvas).rectangle((0, 0, size[0], 18), fill=(225, 228, 232))
    _draw_text(canvas, text, rng, (20, 20, 30), left=True)
    return canvas


RENDERERS: list[Callable[[str, tuple[int, int], random.Random], Image.Image]] = [_card, _poster, _meme, _screenshot]


def _jpeg_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=60, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def disguise(text: str, rng: random.Random) -> tuple[str, str]:
    """A copy a filter keyed on exact words would miss: leetspeak, or letters spaced or dotted apart."""
    style = rng.choice(["leet", "spaced", "dotted"])
    words = text.split()
    longest = sorted(range(len(words)), key=lambda k: -len(words[k]))[: max(1, len(words) // 4)]
    if style == "leet":
        out = [w.translate(LEET) if k in longest or rng.random() < 0.3 else w for k, w in enumerate(words)]
    else:
        joiner = " " if style == "spaced" else "."
        out = [joiner.join(w) if k in longest else w for k, w in enumerate(words)]
    return " ".join(out), style


@dataclass(frozen=True)
class Phrasing:
    """One hand-written phrasing, the group it belongs to and the labels every variant carries."""

    group: str
    text: str
    positive: frozenset[str]

    @property
    def key(self) -> str:
        """A short stable id shared by every post built from this phrasing (for grouped folds)."""
        return hashlib.sha256(f"{self.group}|{self.text}".encode()).hexdigest()[:12]


def _labels(positive: frozenset[str]) -> dict[str, int]:
    return {c: int(c in positive) for c in CATEGORIES}


class _Builder:
    def __init__(self) -> None:
        self.posts: dict[str, list[LabeledPost]] = {split: [] for split, _ in SPLIT_SHARES}
        self.count = 0

    def add(self, split: str, phrasing: Phrasing | None, *, mode: str, kind: str, variant: str,
            text: str | None, image: Image.Image | None) -> None:
        self.count += 1
        metadata = {"mode": mode, "kind": kind, "variant": variant, "split": split,
                    "group": phrasing.group if phrasing else "scene",
                    "phrasing": phrasing.key if phrasing else f"scene-{self.count}"}
        post = Post(post_id=f"eval-{self.count:05d}", user_id="eval", text=text or None,
                    image=ImageRef(data_b64=_jpeg_b64(image)) if image is not None else None, metadata=metadata)
        self.posts[split].append(LabeledPost(post, _labels(phrasing.positive if phrasing else frozenset())))

    def phrasing(self, split: str, p: Phrasing, index: int) -> None:
        """The phrasing as caption, only in an image, sometimes both, sometimes disguised."""
        rng = random.Random(_seed(p.group, p.text))
        size = rng.choice(SIZES)
        if index % 3 == 2:
            self.add(split, p, mode="caption", kind="caption_over_picture", variant="plain", text=p.text,
                     image=_scene(size, rng))
        else:
            self.add(split, p, mode="caption", kind="caption_only", variant="plain", text=p.text, image=None)
        render = RENDERERS[index % len(RENDERERS)]
        self.add(split, p, mode="image", kind="image_text_only", variant="plain",
                 text=rng.choice(NEUTRAL_CAPTIONS), image=render(p.text, size, rng))
        if index % 3 == 0:
            render = RENDERERS[(index + 1) % len(RENDERERS)]
            self.add(split, p, mode="both", kind="caption_and_image", variant="plain", text=p.text,
                     image=render(p.text, size, rng))
        if index % 2 == 1:
            disguised, style = disguise(p.text, rng)
            if index % 4 == 1:
                self.add(split, p, mode="caption", kind="caption_only", variant=style, text=disguised, image=None)
            else:
                self.add(split, p, mode="image", kind="image_text_only", variant=style,
                         text=rng.choice(NEUTRAL_CAPTIONS), image=render(disguised, size, rng))

    def scene(self, split: str, index: int) -> None:
        rng = random.Random(_seed("scene", str(index)))
        self.add(split, None, mode="none", kind="picture", variant="plain", text=rng.choice(PHOTO_CAPTIONS),
                 image=_scene(rng.choice(SIZES), rng))


def _splits(group: str, count: int) -> list[str]:
    """Split of each phrasing of a group: a seeded shuffle, then half / a quarter / a quarter."""
    order = list(range(count))
    random.Random(_seed("split", group)).shuffle(order)
    split_of = [""] * count
    start = 0
    for n, (split, share) in enumerate(SPLIT_SHARES):
        stop = count if n == len(SPLIT_SHARES) - 1 else start + round(share * count)
        for rank in range(start, stop):
            split_of[order[rank]] = split
        start = stop
    return split_of


def _groups() -> list[tuple[str, list[str], list[str], frozenset[str]]]:
    """(group, first-batch texts, second-batch texts, labels of the group) for every group."""
    groups = [(category, texts, HARMFUL_MORE.get(category, []), frozenset({category, *extra}))
              for category, (extra, texts) in HARMFUL.items()]
    looks_like = list(dict.fromkeys([*BENIGN, *BENIGN_MORE]))
    groups += [(f"benign-{name}", BENIGN.get(name, []), BENIGN_MORE.get(name, []), frozenset()) for name in looks_like]
    return groups


def build() -> dict[str, list[LabeledPost]]:
    """All splits in memory."""
    builder = _Builder()
    groups = _groups()
    for group, first, second, labels in groups:
        phrasings = [Phrasing(group, t, labels | frozenset(ALSO.get(t, ()))) for t in [*first, *second]]
        # Each batch split on its own, so that adding phrasings never moves an existing one.
        splits = _splits(group, len(first)) + _splits(f"{group}/more", len(second))
        for index, (p, split) in enumerate(zip(phrasings, splits, strict=True)):
            builder.phrasing(split, p, index)
    for index, split in enumerate(_splits("scene", 48)):
        builder.scene(split, index)
    # The third batch comes after every earlier post, so their ids and bytes stay as they were.
    labels_of = {group: labels for group, _, _, labels in groups}
    third = [(c, texts) for c, texts in HARMFUL_THIRD.items()] + [(f"benign-{n}", t) for n, t in BENIGN_THIRD.items()]
    for group, texts in third:
        phrasings = [Phrasing(group, t, labels_of[group]) for t in texts]
        for index, (p, split) in enumerate(zip(phrasings, _splits(f"{group}/third", len(texts)), strict=True)):
            builder.phrasing(split, p, index)
    return builder.posts


def main() -> None:
    """Write train.jsonl, dev.jsonl and test.jsonl into the package's evaldata directory."""
    for split, posts in build().items():
        path = SPLIT_PATHS[split]
        write_labeled(path, posts)
        harmful = sum(any(ex.labels.values()) for ex in posts)
        print(f"{split}: {len(posts)} posts ({harmful} harmful) -> {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
