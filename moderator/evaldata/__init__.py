"""The labeled evaluation set that ships with the project, and the labeled JSONL format.

One line per post: ``{"post": <Post JSON as in docs/contract.md>, "labels": {"scam": 1, "drugs": 0}}``.
A category missing from ``labels`` is unknown for that post (not negative). The same format takes
reviewer decisions later, so keep it this plain.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from moderator.ingest.schema import Post
from moderator.model.base import ModelInput

DATA_DIR = Path(__file__).resolve().parent
TRAIN_PATH = DATA_DIR / "train.jsonl"
TEST_PATH = DATA_DIR / "test.jsonl"


@dataclass(frozen=True)
class LabeledPost:
    """A post and its per-category labels (1 harmful, 0 not)."""

    post: Post
    labels: dict[str, int]

    @property
    def kind(self) -> str:
        """How the example was built (e.g. ``image_text_only``), from the post's metadata."""
        return str(self.post.metadata.get("kind", ""))


def read_labeled(path: Path) -> list[LabeledPost]:
    """Parse a labeled JSONL file; errors name the line."""
    examples: list[LabeledPost] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            labels = {str(k): int(v) for k, v in record["labels"].items()}
            if any(v not in (0, 1) for v in labels.values()):
                raise ValueError("labels must be 0 or 1")
            examples.append(LabeledPost(Post.model_validate(record["post"]), labels))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return examples


def write_labeled(path: Path, examples: Iterable[LabeledPost]) -> None:
    """Write examples as labeled JSONL."""
    lines = [
        json.dumps({"post": ex.post.model_dump(mode="json", exclude_none=True), "labels": ex.labels}, sort_keys=True)
        for ex in examples
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def to_model_input(post: Post) -> ModelInput:
    """What the classifier sees of a labeled post; only inline images (no fetching here)."""
    image = None
    if post.image is not None:
        if post.image.data_b64 is None:
            raise ValueError(f"post {post.post_id}: labeled data must carry images inline (data_b64)")
        raw = Image.open(io.BytesIO(base64.b64decode(post.image.data_b64)))
        image = ImageOps.exif_transpose(raw).convert("RGB")
    return ModelInput(text=post.text, image=image)


def label_matrix(examples: Sequence[LabeledPost], categories: Sequence[str]) -> np.ndarray:
    """``(n, len(categories))`` float labels, NaN where a post has no label for a category."""
    return np.array(
        [[float(ex.labels[c]) if c in ex.labels else np.nan for c in categories] for ex in examples], dtype=np.float64
    )
