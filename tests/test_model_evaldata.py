"""The shipped labeled evaluation set and the labeled JSONL format."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from moderator.evaldata import (
    CATEGORIES,
    DATA_DIR,
    MODES,
    SPLIT_PATHS,
    LabeledPost,
    label_matrix,
    read_labeled,
    to_model_input,
)

SCORED = [c for c in CATEGORIES if c != "sexual_minors"]


@cache
def split(name: str) -> list[LabeledPost]:
    return read_labeled(SPLIT_PATHS[name])


def _phrasings(examples: list[LabeledPost]) -> set[tuple[str, str]]:
    """(group, plain phrasing) of every harmful or benign phrasing: the plain captions."""
    return {(str(ex.post.metadata["group"]), ex.post.text or "") for ex in examples
            if ex.mode in ("caption", "both") and ex.post.metadata.get("variant") == "plain"}


def test_shipped_set_is_large_labeled_everywhere_and_small_on_disk() -> None:
    examples = [ex for name in SPLIT_PATHS for ex in split(name)]
    assert len(examples) >= 1500
    labels = label_matrix(examples, CATEGORIES)
    assert not np.isnan(labels).any()  # every post labeled for every category
    assert labels[:, CATEGORIES.index("sexual_minors")].sum() == 0
    assert sum(path.stat().st_size for path in DATA_DIR.glob("*.jsonl")) < 24 * 2**20


def test_every_category_has_forty_phrasings_in_every_mode_and_split() -> None:
    examples = [ex for name in SPLIT_PATHS for ex in split(name)]
    phrasings = Counter(group for group, _ in _phrasings(examples))
    assert all(phrasings[category] >= 40 for category in SCORED), phrasings
    assert sum(n for group, n in phrasings.items() if group.startswith("benign")) >= 150
    for name in SPLIT_PATHS:
        labels = label_matrix(split(name), CATEGORIES)
        modes = np.array([ex.mode for ex in split(name)])
        for category in SCORED:
            positive = labels[:, CATEGORIES.index(category)] == 1
            assert all((positive & (modes == mode)).any() for mode in MODES), (name, category)
        assert {ex.post.metadata["variant"] for ex in split(name)} >= {"plain", "leet", "spaced", "dotted"}


def test_splits_are_drawn_by_phrasing() -> None:
    by_split = {name: _phrasings(split(name)) for name in SPLIT_PATHS}
    assert not by_split["train"] & by_split["dev"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["dev"] & by_split["test"]


def test_images_decode_to_rgb_and_text_is_normalised_as_in_the_service() -> None:
    example = next(ex for ex in split("test") if ex.post.image is not None)
    image = to_model_input(example.post).image
    assert image is not None and image.mode == "RGB" and max(image.size) <= 320
    shouting = LabeledPost(example.post.model_copy(update={"text": "ＢＵＹ  Now"}), {})
    assert to_model_input(shouting.post).text == "buy now"


def test_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"post": {"post_id": "a", "user_id": "u", "text": "hi"}, "labels": {"scam": 0}}\n{"post": {}}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_labeled(path)
    path.write_text('{"post": {"post_id": "a", "user_id": "u", "text": "hi"}, "labels": {"scam": 3}}\n')
    with pytest.raises(ValueError, match="0 or 1"):
        read_labeled(path)
