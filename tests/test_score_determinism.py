"""A post's scores do not depend on its batch: alone or among any neighbours, the same decision.

A redelivered post must get the decision it got the first time, and the score cache must not keep
whichever scores a post happened to get in its first batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from moderator.bench.workload import model_inputs
from moderator.ingest.validate import IngestLimits
from moderator.model.base import ModelInput
from moderator.model.dual_encoder import DualEncoderClassifier
from moderator.model.offline import OfflineStackClassifier
from moderator.policy.engine import evaluate
from moderator.policy.loader import load_policy
from moderator.settings import Settings
from moderator.testing.samples import sample_posts

ROOT = Path(__file__).resolve().parents[1]
POLICY = load_policy(ROOT / "policies" / "default.yaml")
BATCH_SIZES = (1, 3, 8, 21, 64)
# CPU kernels differ by batch shape only in the last float bits; CUDA runs the dual encoder in
# bf16/fp16 and picks kernels by shape, so its tolerance is wider (docs/models.md).
TOLERANCE = {"cpu": 1e-4, "cuda": 1e-2}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]

Scorer = Callable[[Sequence[ModelInput]], list[dict[str, float]]]


def inputs(count: int, seed: int) -> list[ModelInput]:
    """Posts with images (rendered text of different lengths), captions of different lengths, both."""
    posts = sample_posts(count, seed=seed, prefix="det")
    for i, post in enumerate(posts):
        if "text" in post:
            post["text"] = f"{post['text']}{' and more words' * (i % 9)}"
    return model_inputs(posts, IngestLimits.from_settings(Settings(_env_file=None)))


def assert_batch_independent(score: Scorer, items: list[ModelInput], device: str) -> None:
    """Each post scored in shuffled batches of every size in BATCH_SIZES matches it scored alone."""
    alone = [score([item])[0] for item in items]
    rng = random.Random(7)
    for size in BATCH_SIZES:
        picked = [rng.randrange(len(items)) for _ in range(size)]  # random neighbours, repeats included
        for index, scores in zip(picked, score([items[i] for i in picked]), strict=True):
            assert scores.keys() == alone[index].keys()
            worst = max(abs(scores[c] - alone[index][c]) for c in scores)
            assert worst <= TOLERANCE[device], (size, index, scores, alone[index])
            if device == "cpu":
                assert evaluate(POLICY, scores).action == evaluate(POLICY, alone[index]).action


@pytest.fixture(scope="module", params=DEVICES)
def offline(request: pytest.FixtureRequest) -> OfflineStackClassifier:
    return OfflineStackClassifier(POLICY.head_spec(), device=request.param)


@pytest.mark.slow
def test_offline_stack_scores_do_not_depend_on_the_batch(offline: OfflineStackClassifier) -> None:
    assert_batch_independent(offline.score_batch, inputs(16, seed=3), offline.device.type)


@pytest.mark.parametrize("device", DEVICES)
def test_dual_encoder_scores_do_not_depend_on_the_batch_or_text_padding(tiny_clip_dir: Path, device: str) -> None:
    classifier = DualEncoderClassifier(str(tiny_clip_dir), POLICY.head_spec(), device=device)
    assert_batch_independent(classifier.score_batch, inputs(32, seed=5), device)


def test_ocr_reads_an_image_the_same_alone_and_among_wider_text(offline: OfflineStackClassifier) -> None:
    images = [item.image for item in inputs(24, seed=3) if item.image is not None]
    alone = [offline.ocr.read([image])[0] for image in images]
    assert any(" " in text for text in alone), "the sample images carry multi-word text"
    assert offline.ocr.read(images) == alone
    assert offline.ocr.read(images[::-1]) == alone[::-1]
