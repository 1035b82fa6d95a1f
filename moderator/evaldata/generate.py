"""Regenerate the shipped evaluation set: ``python -m moderator.evaldata.generate``.

Posts are built from phrase pools: every harmful phrase becomes one post where the caption
carries it and one where it is only rendered inside the image (under a neutral caption), so the
set measures OCR-driven scoring too. Benign phrases (many of them near misses such as "I killed it
at the gym") appear both ways as well, next to benign photographs shipped by scikit-image (public
domain or CC0, see LICENSES.md) and generated scenes. Whole phrases go to either the train or the
test split, so test phrasings are never seen in training.

Deterministic for a given Pillow and scikit-image version; needs scikit-image, which only this
script uses (``pip install scikit-image``).
"""

from __future__ import annotations

import base64
import io
import random
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from moderator.evaldata import TEST_PATH, TRAIN_PATH, LabeledPost, write_labeled
from moderator.ingest.schema import ImageRef, Post

CATEGORIES = ("nudity", "violence", "drugs", "scam", "hate")
SIZE = (320, 240)

HARMFUL: dict[str, list[str]] = {
    "scam": [
        "earn $5000 a week from home",
        "send $50 in bitcoin and we double your money",
        "you won a free iphone, claim your prize now",
        "click the link to verify your bank account",
        "your account is suspended, log in here to restore it",
        "guaranteed 300% returns, invest today",
        "free gift card giveaway, just enter your card details",
        "make $900 a day working from home, no experience",
        "congratulations lucky winner, pay the shipping fee to get your prize",
        "cash app flip: send $100 get $1000 back",
        "claim your tax refund now at this link",
        "dm me for my forex signals, 100% profit guaranteed",
    ],
    "drugs": [
        "buy cocaine online, fast discreet delivery",
        "selling xanax and oxycodone, dm me",
        "pills for sale, no prescription needed",
        "fresh molly and lsd tabs available tonight",
        "meth for sale, cheap prices",
        "percocet 30s in stock, cash only",
        "order mdma with crypto, ships worldwide",
        "heroin plug, hit my line",
        "got fentanyl, serious buyers only",
        "ketamine and shrooms for sale this weekend",
        "adderall without prescription, dm for price",
        "ecstasy pills available, message me",
    ],
    "violence": [
        "I will find you and kill you",
        "I am going to shoot up the school tomorrow",
        "watch me stab him with this knife",
        "he deserves to be beaten until he bleeds",
        "bring your guns, we attack at midnight",
        "I know where you live, you are dead",
        "selling untraceable guns, no background check",
        "video of a man being beaten to death",
        "I will burn your house down with you inside",
        "someone should put a bullet in her head",
        "blood everywhere after the knife fight",
        "we will hunt them down and hurt them",
    ],
    "hate": [
        "those immigrants are vermin and should be thrown out",
        "people of that religion are animals",
        "women are too stupid to vote",
        "gay people are a disease on society",
        "all muslims are terrorists",
        "send them all back where they came from",
        "disabled people are a burden and should not exist",
        "that race is genetically inferior",
        "refugees are parasites, keep them out",
        "trans people are freaks",
    ],
    "nudity": [
        "nude pics in my bio, 18+ only",
        "send nudes",
        "my onlyfans has full explicit videos",
        "hot naked girls waiting for you",
        "free xxx porn videos, click now",
        "topless photos of me, dm for more",
        "watch live sex cams now",
        "uncensored nude photos leaked",
    ],
}

BENIGN = [
    "lovely dinner with friends tonight",
    "happy birthday mom, love you",
    "my cat sleeping in the sun",
    "fresh bread from the bakery this morning",
    "sunset at the beach was amazing",
    "just finished my first marathon",
    "new recipe: lemon garlic pasta",
    "our garden is finally blooming",
    "weekend hike in the mountains",
    "team meeting moved to 3pm",
    "the library is open late on thursdays",
    "coffee and a good book",
    # Near misses: words of a harmful category in a harmless post.
    "I killed it at the gym today",
    "this album is fire, killer tracks all the way",
    "pharmacy open until 9pm, flu shots available",
    "don't forget to take your vitamins",
    "big summer sale, 20% off all shoes",
    "won first prize at the county fair pie contest",
    "earn reward points with every coffee",
    "new kitchen knife set arrived, so sharp",
    "shooting photos at the lake this weekend",
    "the bank opens at 9 on mondays",
    "art class: drawing the human figure",
    "our church bake sale raised $500",
    "celebrating diwali with the neighbours",
    "the immigration museum exhibit opens today",
    "movie night: a classic war film",
    "history lecture on the second world war",
]

NEUTRAL_CAPTIONS = ["", "lol", "look at this", "new post", "thoughts?", "saw this today", "share if you agree", "wow"]

# scikit-image sample photographs (public domain or CC0; see LICENSES.md) with benign captions.
PHOTOS = {
    "astronaut": "astronaut portrait from the space program archive",
    "coffee": "morning coffee at my favourite cafe",
    "chelsea": "my cat chelsea being cute",
    "rocket": "rocket launch this morning",
    "hubble_deep_field": "deep space photo from the telescope",
    "camera": "vintage photographer on the lawn",
    "coins": "my grandfather's coin collection",
    "clock": "old clock on the shelf",
    "retina": "eye exam photo from my check-up",
    "cell": "microscope slide from biology class",
    "brick": "brick wall texture for my design project",
    "grass": "fresh cut grass in the yard",
    "gravel": "gravel path in the park",
    "horse": "horse sticker for the kids",
    "text": "old printed page from the archives",
    "immunohistochemistry": "lab stain from today's experiment",
}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same glyphs on every machine, no system fonts needed.
    return ImageFont.load_default(size=size)


def _photo(name: str) -> Image.Image:
    from skimage import data

    array = np.asarray(getattr(data, name)())
    if array.dtype == bool:
        array = (~array).astype(np.uint8) * 255
    image = Image.fromarray(array).convert("RGB")
    image.thumbnail((SIZE[0] * 2, SIZE[1] * 2))
    return image


def _fit(image: Image.Image) -> Image.Image:
    """Centre-crop and resize to the canvas size."""
    scale = max(SIZE[0] / image.width, SIZE[1] / image.height)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    left, top = (resized.width - SIZE[0]) // 2, (resized.height - SIZE[1]) // 2
    return resized.crop((left, top, left + SIZE[0], top + SIZE[1]))


def _draw_lines(
    canvas: Image.Image, text: str, rng: random.Random, *, fill: tuple[int, int, int], stroke: bool
) -> None:
    size = rng.choice([22, 26, 30])
    font = _font(size)
    lines = textwrap.wrap(text, width=max(10, int(SIZE[0] / (size * 0.55))))
    draw = ImageDraw.Draw(canvas)
    height = len(lines) * (size + 8)
    y = max(8, (SIZE[1] - height) // 2 + rng.randint(-30, 30))
    for line in lines:
        width = draw.textlength(line, font=font)
        x = max(6, (SIZE[0] - width) / 2)
        if stroke:
            draw.text((x, y), line, font=font, fill=fill, stroke_width=2, stroke_fill=(0, 0, 0))
        else:
            draw.text((x, y), line, font=font, fill=fill)
        y += size + 8


def _flat_card(text: str, rng: random.Random) -> Image.Image:
    background = (rng.randint(150, 255), rng.randint(150, 255), rng.randint(150, 255))
    canvas = Image.new("RGB", SIZE, background)
    _draw_lines(canvas, text, rng, fill=(rng.randint(0, 70), rng.randint(0, 70), rng.randint(0, 70)), stroke=False)
    return canvas


def _dark_poster(text: str, rng: random.Random) -> Image.Image:
    top, bottom = np.array([rng.randint(0, 80) for _ in range(3)]), np.array([rng.randint(40, 140) for _ in range(3)])
    ramp = np.linspace(0, 1, SIZE[1])[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(SIZE[0], axis=1).astype(np.uint8)
    canvas = Image.fromarray(pixels)
    _draw_lines(canvas, text, rng, fill=(255, 255, rng.randint(120, 255)), stroke=False)
    return canvas


def _meme(text: str, rng: random.Random) -> Image.Image:
    canvas = _fit(_photo(rng.choice(["coffee", "chelsea", "rocket", "astronaut", "brick", "grass"])))
    _draw_lines(canvas, text, rng, fill=(255, 255, 255), stroke=True)
    return canvas


def _scene(rng: random.Random) -> Image.Image:
    """A generated landscape: sky gradient, sun and hills. No text."""
    sky_top = np.array([rng.randint(60, 140), rng.randint(120, 200), 255])
    sky_bottom = np.array([255, rng.randint(170, 230), rng.randint(120, 200)])
    ramp = np.linspace(0, 1, SIZE[1])[:, None, None]
    canvas = Image.fromarray((sky_top * (1 - ramp) + sky_bottom * ramp).repeat(SIZE[0], axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = rng.randint(40, 280), rng.randint(30, 110), rng.randint(18, 34)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 230, 120))
    for layer in range(3):
        base = 150 + 30 * layer
        points = [(x, base - int(25 * np.sin(x / rng.randint(30, 70) + layer))) for x in range(0, SIZE[0] + 1, 16)]
        green = (40 + 30 * layer, 110 + 35 * layer, 50 + 10 * layer)
        draw.polygon([(0, SIZE[1]), *points, (SIZE[0], SIZE[1])], fill=green)
    return canvas


RENDERERS: list[Callable[[str, random.Random], Image.Image]] = [_flat_card, _dark_poster, _meme]


def _jpeg_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _labels(category: str | None) -> dict[str, int]:
    return {c: int(c == category) for c in CATEGORIES}


class _Builder:
    def __init__(self) -> None:
        self.rng = random.Random(20261125)
        self.splits: dict[str, list[LabeledPost]] = {"train": [], "test": []}

    def add(self, split: str, kind: str, text: str | None, image: Image.Image | None, category: str | None) -> None:
        number = sum(len(v) for v in self.splits.values()) + 1
        post = Post(
            post_id=f"eval-{number:04d}",
            user_id="eval",
            text=text or None,
            image=ImageRef(data_b64=_jpeg_b64(image)) if image is not None else None,
            metadata={"kind": kind, "split": split},
        )
        self.splits[split].append(LabeledPost(post, _labels(category)))

    def phrase_pair(self, split: str, phrase: str, category: str | None, index: int) -> None:
        """The phrase as the caption (alone or over a photo), and only inside an image."""
        if index % 3 == 2:
            photo = _fit(_photo(self.rng.choice(list(PHOTOS))))
            self.add(split, "caption_over_photo", phrase, photo, category)
        else:
            self.add(split, "caption_only", phrase, None, category)
        renderer = RENDERERS[index % len(RENDERERS)]
        self.add(split, "image_text_only", self.rng.choice(NEUTRAL_CAPTIONS), renderer(phrase, self.rng), category)


def _split(index: int) -> str:
    # Two phrases in five go to test: enough positives per category to rank.
    return "test" if index % 5 in (1, 3) else "train"


def build() -> dict[str, list[LabeledPost]]:
    """Build both splits in memory."""
    builder = _Builder()
    for category, phrases in HARMFUL.items():
        for i, phrase in enumerate(phrases):
            builder.phrase_pair(_split(i), phrase, category, i)
    for i, phrase in enumerate(BENIGN):
        builder.phrase_pair(_split(i), phrase, None, i)
    for i, (name, caption) in enumerate(PHOTOS.items()):
        builder.add(_split(i), "photo", caption, _fit(_photo(name)), None)
    for i in range(10):
        caption = builder.rng.choice(["view from the hills", "", "nice weather today", "drew this landscape"])
        builder.add(_split(i), "scene", caption, _scene(builder.rng), None)
    return builder.splits


def main() -> None:
    """Write train.jsonl and test.jsonl next to this module."""
    splits = build()
    write_labeled(TRAIN_PATH, splits["train"])
    write_labeled(TEST_PATH, splits["test"])
    for split, path in (("train", TRAIN_PATH), ("test", TEST_PATH)):
        print(f"{split}: {len(splits[split])} posts -> {path} ({Path(path).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
