"""The shipped labeled evaluation set and the labeled JSONL format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moderator.evaldata import TEST_PATH, TRAIN_PATH, label_matrix, read_labeled, to_model_input

CATEGORIES = ["nudity", "violence", "drugs", "scam", "hate"]


@pytest.mark.parametrize("path", [TRAIN_PATH, TEST_PATH])
def test_shipped_split_is_labeled_for_every_category(path: Path) -> None:
    examples = read_labeled(path)
    assert 50 <= len(examples) <= 150
    labels = label_matrix(examples, CATEGORIES)
    assert not np.isnan(labels).any()  # every post labeled for every category
    for j, name in enumerate(CATEGORIES):
        harmful_in_image_only = [
            ex for ex, row in zip(examples, labels, strict=True) if row[j] == 1 and ex.kind == "image_text_only"
        ]
        assert harmful_in_image_only, f"{path.name}: no image-only {name} posts"
    kinds = {ex.kind for ex in examples}
    assert {"caption_only", "image_text_only", "photo", "scene"} <= kinds


def test_splits_share_no_phrase() -> None:
    def captions(path: Path) -> set[str]:
        return {ex.post.text for ex in read_labeled(path) if ex.kind == "caption_only" and ex.post.text}

    assert not captions(TRAIN_PATH) & captions(TEST_PATH)


def test_images_decode_to_rgb() -> None:
    example = next(ex for ex in read_labeled(TEST_PATH) if ex.post.image is not None)
    image = to_model_input(example.post).image
    assert image is not None and image.mode == "RGB" and image.size == (320, 240)


def test_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"post": {"post_id": "a", "user_id": "u", "text": "hi"}, "labels": {"scam": 0}}\n{"post": {}}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_labeled(path)
    path.write_text('{"post": {"post_id": "a", "user_id": "u", "text": "hi"}, "labels": {"scam": 3}}\n')
    with pytest.raises(ValueError, match="0 or 1"):
        read_labeled(path)
