"""The transformers path: tiny random CLIP and SigLIP saved to disk and loaded back like real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoProcessor

from moderator.model.base import CategorySpec, HeadSpec, ModelInput
from moderator.model.calibration import CALIBRATION_FILE, Calibration
from moderator.model.dual_encoder import DualEncoderClassifier
from moderator.model.heads import train_head
from moderator.model.loader import load_classifier
from moderator.settings import Settings
from moderator.testing.tiny_models import build_tiny_clip, build_tiny_siglip

SPEC = HeadSpec(
    categories=(
        CategorySpec("scam", ("earn money from home", "click this link to claim your prize")),
        CategorySpec("drugs", ("buy illegal drugs online",)),
    ),
    neutral_prompts=("an ordinary photo", "a harmless post"),
)
ITEMS = [
    ModelInput("earn money from home"),
    ModelInput(None, Image.new("RGB", (64, 48), (200, 30, 30))),
    ModelInput("a harmless post", Image.new("RGB", (40, 40), (10, 200, 30))),
]


@pytest.fixture(scope="module", params=["clip", "siglip"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = {"clip": build_tiny_clip, "siglip": build_tiny_siglip}[request.param]
    return build(tmp_path_factory.mktemp("models") / f"tiny-{request.param}")


def test_loads_processor_and_scores_from_disk(model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(model_dir)
    expected = "SiglipTokenizer" if "siglip" in model_dir.name else "CLIPTokenizer"
    assert type(processor.tokenizer).__name__ == expected

    classifier = load_classifier(Settings(model=str(model_dir), device="cpu"), SPEC)
    assert isinstance(classifier, DualEncoderClassifier)
    scores = classifier.score_batch(ITEMS)
    assert [list(s) for s in scores] == [SPEC.names] * 3
    assert all(0.0 <= v <= 1.0 for s in scores for v in s.values())
    assert classifier.score_batch(ITEMS) == scores
    assert classifier.score_batch([]) == []
    assert classifier.info.components["encoder"].startswith(("CLIPModel", "SiglipModel"))


def test_features_hold_both_modalities(model_dir: Path) -> None:
    classifier = DualEncoderClassifier(str(model_dir), SPEC, device="cpu")
    encoded = classifier.encode(ITEMS)
    d = classifier.embed_dim
    assert encoded.features.shape == (3, 2 * d + 2)
    assert np.all(encoded.features[0, :d] == 0) and np.any(encoded.features[0, d : 2 * d])
    assert np.any(encoded.features[1, :d]) and np.all(encoded.features[1, d : 2 * d] == 0)
    assert encoded.features[2, -2:].tolist() == [1.0, 1.0]


def test_trained_head_and_calibration_load_from_heads_dir(model_dir: Path, tmp_path: Path) -> None:
    base = DualEncoderClassifier(str(model_dir), SPEC, device="cpu")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, base.encode(ITEMS[:1]).features.shape[1])).astype(np.float32)
    labels = np.stack([features[:, 0] > 0, features[:, 1] > 0], axis=1).astype(np.float64)
    head = train_head(features, labels, SPEC.names, base.encoder_id, name="tiny-head")
    head.save(tmp_path)
    calibration = Calibration(base.default_calibration, {"drugs": (2.0, -1.0)})
    (tmp_path / CALIBRATION_FILE).write_text(
        calibration.to_json(encoder=base.encoder_id, fingerprint=SPEC.fingerprint())
    )

    headed = DualEncoderClassifier(str(model_dir), SPEC, device="cpu", heads_dir=tmp_path)
    assert headed.info.components["head:tiny-head"] == f"linear@{head.version}"
    assert headed.info.version != base.info.version
    expected = head.predict(headed.encode(ITEMS).features)
    got = np.array([[row[n] for n in SPEC.names] for row in headed.score_batch(ITEMS)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_calibration_changes_zero_shot_scores(model_dir: Path, tmp_path: Path) -> None:
    base = DualEncoderClassifier(str(model_dir), SPEC, device="cpu")
    sharp = Calibration(base.default_calibration, {"scam": (0.5, 2.0)})
    (tmp_path / CALIBRATION_FILE).write_text(sharp.to_json(encoder=base.encoder_id, fingerprint=SPEC.fingerprint()))
    calibrated = DualEncoderClassifier(str(model_dir), SPEC, device="cpu", heads_dir=tmp_path)
    logits = base.encode(ITEMS).zero_shot
    expected = 1 / (1 + np.exp(-(logits[:, 0] / 0.5 + 2.0)))
    got = [row["scam"] for row in calibrated.score_batch(ITEMS)]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [row["drugs"] for row in calibrated.score_batch(ITEMS)] == [row["drugs"] for row in base.score_batch(ITEMS)]
