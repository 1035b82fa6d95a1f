"""Fine-tuned top layers of MiniLM: branching, tuning, storage, and how the offline stack uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moderator.model.heads import train_head
from moderator.model.offline import OfflineStackClassifier, PostText
from moderator.model.text_encoder import MiniLMEncoder
from moderator.model.tuned_layers import TUNED_LAYERS_FILE, TunedLayers, is_tuned
from moderator.model.tuning import TextStates, TuneSettings, text_embeddings, tune, with_embeddings
from moderator.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["buy cheap pills now", "lovely walk in the park", "i will hurt you", "great game last night",
         "send me your bank pin", "happy birthday mum"]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder(torch.device("cpu"))


def _states(encoder: MiniLMEncoder, depth: int) -> TextStates:
    slots = np.array([[i, -1] for i in range(len(TEXTS))])
    return TextStates(below=encoder.hidden_below(TEXTS, depth), slots=slots)


def _tuned(encoder: MiniLMEncoder, depth: int = 1) -> tuple[TunedLayers, np.ndarray]:
    """Layers tuned a few steps on TEXTS (the first, third and fifth harmful) and the frozen features."""
    states = _states(encoder, depth)
    features = np.zeros((len(TEXTS), 2 * encoder.dim + 4), dtype=np.float32)
    features = with_embeddings(features, states, encoder.encode(TEXTS))
    labels = np.array([[1.0], [0.0], [1.0], [0.0], [1.0], [0.0]])
    slots = ((0, encoder.dim), (encoder.dim, 2 * encoder.dim))
    head = train_head(features, labels, ["harm"], "x", kind="shared", slots=slots, steps=20)
    layers = TunedLayers.branch(encoder.model, depth, encoder.version)
    tune(layers, head, states, features, labels, np.arange(len(TEXTS)), l2=0.01, benign_weight=1.0,
         settings=TuneSettings(depth=depth, epochs=2, lr=1e-2, head_lr=1e-3, batch=4))
    return layers, features


def test_untouched_branch_reproduces_the_shipped_embeddings(encoder: MiniLMEncoder) -> None:
    layers = TunedLayers.branch(encoder.model, 2, encoder.version).eval()
    shipped, branched = encoder.encode_with(TEXTS, layers)
    assert np.allclose(shipped, encoder.encode(TEXTS), atol=1e-6)
    assert np.allclose(branched, shipped, atol=1e-5)
    assert np.allclose(text_embeddings(layers, _states(encoder, 2)), shipped, atol=1e-5)


@pytest.fixture(scope="module")
def tuned(encoder: MiniLMEncoder) -> TunedLayers:
    return _tuned(encoder)[0]


def test_tuning_is_reproducible_and_moves_the_embeddings(encoder: MiniLMEncoder, tuned: TunedLayers) -> None:
    first = tuned
    again, _ = _tuned(encoder)
    assert first.version == again.version
    untouched = TunedLayers.branch(encoder.model, 1, encoder.version).layers.state_dict()
    for name, value in first.layers.state_dict().items():  # only biases and LayerNorm move (BitFit)
        assert torch.equal(value, untouched[name]) == (not is_tuned(name)), name
    assert first.version != TunedLayers.branch(encoder.model, 1, encoder.version).version
    shipped, tuned = encoder.encode_with(TEXTS, first)
    assert not np.allclose(tuned, shipped, atol=1e-3)
    assert np.allclose(tuned, text_embeddings(first, _states(encoder, 1)), atol=1e-5)


def test_stored_layers_load_back_and_only_onto_their_base(encoder: MiniLMEncoder, tuned: TunedLayers,
                                                          tmp_path: Path) -> None:
    layers = tuned
    path = layers.save(tmp_path)
    assert path.name == TUNED_LAYERS_FILE and path.stat().st_size < 30_000  # fp16 biases and LayerNorm of one layer
    loaded = TunedLayers.load(path, encoder.model, encoder.version)
    assert loaded.version == layers.version and loaded.depth == 1
    with pytest.raises(ValueError, match="tuned for text encoder"):
        TunedLayers.load(path, encoder.model, "another model")


def test_offline_stack_reads_features_through_the_tuned_layers(encoder: MiniLMEncoder, tuned: TunedLayers,
                                                               tmp_path: Path) -> None:
    spec = load_policy(ROOT / "policies" / "default.yaml").head_spec()
    tuned.save(tmp_path)
    classifier = OfflineStackClassifier(spec, device="cpu", heads_dir=tmp_path)
    assert classifier.tuned is not None and classifier.tuned.version == tuned.version
    assert classifier.encoder_id == classifier.tuned_encoder_id(tuned) != classifier.tuned_encoder_id(None)
    assert classifier.info.components["text_layers"] == f"top1@{tuned.version}"
    posts = [PostText(t, "", "", 0.0, False) for t in TEXTS]
    with_tuned = classifier.encode_read(posts)
    dim = encoder.dim
    assert np.allclose(with_tuned.features[:, :dim], encoder.encode_with(TEXTS, tuned)[1], atol=1e-5)
    assert np.allclose(classifier.encode_read(posts[2:3]).features, with_tuned.features[2:3], atol=1e-5)
    classifier.tuned = None  # the frozen features, for comparison
    frozen = classifier.encode_read(posts)
    assert np.array_equal(with_tuned.zero_shot, frozen.zero_shot)  # zero-shot keeps the shipped MiniLM
    assert not np.allclose(with_tuned.features[:, :dim], frozen.features[:, :dim], atol=1e-3)
