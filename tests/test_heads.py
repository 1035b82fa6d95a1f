"""Trained task heads and zero-shot calibration: training, save/load, versions, routing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score

from moderator.model.calibration import CALIBRATION_FILE, Calibration
from moderator.model.heads import TaskHead, load_heads, train_head
from moderator.model.scoring import Encoded, HeadStack

CATEGORIES = ("scam", "drugs")


def separable(n: int = 120, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features where dimension 0 signals scam and dimension 1 signals drugs."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.3).astype(np.float64)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    features[:, :2] += 3.0 * labels.astype(np.float32)
    return features, labels


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_trained_head_learns_and_round_trips(tmp_path: Path, kind: str) -> None:
    features, labels = separable()
    head = train_head(features, labels, CATEGORIES, "enc@1", name="h", kind=kind, hidden=8)
    test_x, test_y = separable(seed=1)
    probs = head.predict(test_x)
    assert probs.shape == (len(test_x), 2)
    assert all(roc_auc_score(test_y[:, j], probs[:, j]) > 0.95 for j in range(2))

    json_path = head.save(tmp_path)
    meta = json.loads(json_path.read_text())
    assert meta["categories"] == list(CATEGORIES)
    assert meta["encoder"] == "enc@1"
    assert meta["version"] == head.version
    loaded = TaskHead.load(json_path)
    assert loaded.version == head.version
    np.testing.assert_allclose(loaded.predict(test_x), probs, atol=1e-6)


def test_version_tracks_weights_and_tampering_is_refused(tmp_path: Path) -> None:
    features, labels = separable()
    head = train_head(features, labels, CATEGORIES, "enc@1", name="h")
    other = train_head(features, labels, CATEGORIES, "enc@1", name="h", l2=1.0)
    assert head.version != other.version
    # Same data, same seed: same weights, same version (deterministic full-batch training).
    assert train_head(features, labels, CATEGORIES, "enc@1", name="h").version == head.version

    json_path = head.save(tmp_path)
    weights_path = json_path.with_suffix(".safetensors")
    tensors = load_file(weights_path)
    tensors["input.mean"] = tensors["input.mean"] + 1.0
    save_file(tensors, weights_path)
    with pytest.raises(ValueError, match="do not match version"):
        TaskHead.load(json_path)


def test_unlabeled_and_one_class_categories(tmp_path: Path) -> None:
    features, labels = separable()
    labels[: len(labels) // 2, 0] = np.nan  # half the posts carry no scam label
    labels[:, 1] = 0.0  # no drug positives at all
    head = train_head(features, labels, CATEGORIES, "enc@1")
    assert head.categories == ("scam",)
    with pytest.raises(ValueError, match="both positive and negative"):
        train_head(features, np.zeros_like(labels), CATEGORIES, "enc@1")


def test_load_heads_filters_by_encoder(tmp_path: Path) -> None:
    features, labels = separable()
    train_head(features, labels, CATEGORIES, "enc@1", name="mine").save(tmp_path)
    train_head(features, labels, CATEGORIES, "enc@2", name="other").save(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text("{}")
    assert [h.name for h in load_heads(tmp_path, "enc@1")] == ["mine"]


def test_head_stack_routes_categories_and_keeps_floor() -> None:
    features, labels = separable()
    head = train_head(features, labels, ("scam",), "enc@1", name="h")
    stack = HeadStack(["scam", "nudity"], Calibration((1.0, 0.0)), [head])
    assert stack.trained_categories() == ["scam"]
    encoded = Encoded(
        features=features[:4],
        zero_shot=np.full((4, 2), -20.0, dtype=np.float32),
        floor=np.array([[0, 0.9]] * 4, dtype=np.float32),
    )
    probs = stack.scores(encoded)
    np.testing.assert_allclose(probs[:, 0], head.predict(features[:4])[:, 0], atol=1e-6)
    np.testing.assert_allclose(probs[:, 1], 0.9)
    with pytest.raises(ValueError, match="scored by both"):
        HeadStack(["scam"], Calibration(), [head, head])


def test_calibration_fit_recovers_temperature_and_bias() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.2, 0.15, size=(4000, 1))
    labels = (rng.random((4000, 1)) < 1 / (1 + np.exp(-(logits / 0.05 - 4.0)))).astype(np.float64)
    fitted = Calibration((1.0, 0.0)).fit(["scam"], logits, labels)
    temperature, bias = fitted.per_category["scam"]
    assert temperature == pytest.approx(0.05, rel=0.15)
    assert bias == pytest.approx(-4.0, rel=0.15)
    probs = fitted.apply(["scam"], np.array([[0.0], [0.2], [0.4]]))
    assert np.all(np.diff(probs[:, 0]) > 0) and probs.min() >= 0 and probs.max() <= 1


def test_calibration_keeps_defaults_where_it_cannot_fit() -> None:
    logits = np.array([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8], [0.4, 0.2]])
    labels = np.array([[0, 1], [0, 0], [0, 1], [0, 0]], dtype=np.float64)
    backwards = np.array([[0.9], [0.1], [0.8], [0.2]])
    assert Calibration((0.5, 1.0)).fit(["a", "b"], logits, labels).per_category.keys() == {"b"}
    assert Calibration((0.5, 1.0)).fit(["b"], backwards, 1 - labels[:, 1:]).per_category == {}


def test_calibration_file_applies_only_to_matching_prompts(tmp_path: Path) -> None:
    path = tmp_path / CALIBRATION_FILE
    path.write_text(Calibration((0.05, -4.0), {"scam": (0.1, -2.0)}).to_json(encoder="enc@1", fingerprint="fp1"))
    loaded = Calibration.load_matching(path, encoder="enc@1", fingerprint="fp1", default=(0.05, -4.0))
    assert loaded.per_category == {"scam": (0.1, -2.0)}
    assert Calibration.load_matching(path, encoder="enc@1", fingerprint="fp2", default=(1.0, 0.0)).per_category == {}
    assert Calibration.load_matching(
        tmp_path / "missing.json", encoder="e", fingerprint="f", default=(1.0, 0.0)
    ) == Calibration((1.0, 0.0))


def test_policy_can_require_a_named_head() -> None:
    features, labels = separable()
    general = train_head(features, labels, CATEGORIES, "enc@1", name="general")
    stack = HeadStack(["scam", "drugs"], Calibration(), [general], required_heads={"scam": "special"})
    assert stack.trained_categories() == ["drugs"]  # scam waits for "special", scored zero-shot meanwhile
    assert stack.components()["head_routes"] == "drugs=general"
    assert (
        HeadStack(["scam", "drugs"], Calibration(), [general]).components()["head_routes"]
        == "drugs=general,scam=general"
    )
