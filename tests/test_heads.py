"""Trained task heads and zero-shot calibration: training, save/load, versions, routing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score

from moderator.evaldata import LabeledPost, label_matrix
from moderator.ingest.schema import Post
from moderator.model.base import CategorySpec, HeadSpec
from moderator.model.calibration import CALIBRATION_FILE, Calibration
from moderator.model.evaluation import (
    category_metrics,
    choose_thresholds,
    encode_examples,
    post_level,
    read_examples,
    threshold_at_fpr,
)
from moderator.model.heads import TaskHead, load_heads, train_head
from moderator.model.offline import PostText
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


def two_slot(n: int = 200, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Posts with a caption slot and an image-text slot; the harmful signal sits in either one,
    the other slot holds a neutral embedding or is absent (all zeros)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 1)) < 0.4).astype(np.float64)
    features = np.zeros((n, 2 * dim + 1), dtype=np.float32)
    features[:, : 2 * dim] = rng.normal(size=(n, 2 * dim))
    where = rng.integers(0, 2, size=n)
    for i in np.flatnonzero(labels[:, 0]):
        features[i, where[i] * dim] += 4.0
    features[(rng.random(n) < 0.3) & ~((labels[:, 0] == 1) & (where == 1)), dim : 2 * dim] = 0.0  # no image text
    features[:, -1] = rng.random(n)  # a flag the shared head must ignore
    return features, labels


def test_shared_head_scores_the_same_words_alike_in_either_slot(tmp_path: Path) -> None:
    dim = 8
    features, labels = two_slot(dim=dim)
    slots = ((0, dim), (dim, 2 * dim))
    head = train_head(features, labels, ("scam",), "enc@1", name="s", kind="shared", slots=slots)
    test_x, test_y = two_slot(dim=dim, seed=1)
    assert roc_auc_score(test_y[:, 0], head.predict(test_x)[:, 0]) > 0.95

    harmful, neutral = np.zeros(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32)
    harmful[0], neutral[1] = 4.0, 1.0
    as_caption = np.concatenate([harmful, neutral, [0.0]]).astype(np.float32)[None]
    in_image = np.concatenate([neutral, harmful, [0.9]]).astype(np.float32)[None]
    alone = np.concatenate([np.zeros(dim), harmful, [0.0]]).astype(np.float32)[None]
    scores = [head.predict(x)[0, 0] for x in (as_caption, in_image, alone)]
    # One set of weights for both slots, the larger logit wins: a neutral caption cannot dilute the image.
    assert scores[0] == pytest.approx(scores[1], abs=1e-6) == pytest.approx(scores[2], abs=1e-6)
    assert head.predict(np.zeros((1, 2 * dim + 1), dtype=np.float32))[0, 0] < 1e-6  # no text at all

    loaded = TaskHead.load(head.save(tmp_path))
    assert loaded.slots == slots and loaded.version == head.version
    np.testing.assert_allclose(loaded.predict(test_x), head.predict(test_x), atol=1e-6)
    with pytest.raises(ValueError, match="shared head needs embedding slots"):
        train_head(features, labels, ("scam",), "enc@1", kind="shared")
    with pytest.raises(ValueError, match="expects 17 features"):
        head.predict(features[:, :-1])


def test_threshold_at_fpr_holds_the_rate_on_the_negatives_exactly() -> None:
    negatives = np.linspace(0.0, 0.99, 100)
    assert (negatives >= threshold_at_fpr(negatives, 0.02)).sum() == 2
    assert (negatives >= threshold_at_fpr(negatives, 0.0)).sum() == 0
    assert (negatives >= threshold_at_fpr(negatives, 0.015)).sum() == 1
    tied = np.array([0.1] * 50 + [0.7] * 3)
    assert (tied >= threshold_at_fpr(tied, 0.02)).sum() == 0  # three tied at the top: all or none, so none


def _labeled(labels: dict[str, int], mode: str) -> LabeledPost:
    post = Post(post_id="p", user_id="u", text="x", metadata={"mode": mode})
    return LabeledPost(post, labels)


def test_recall_at_fpr_per_mode_and_post_level_thresholds() -> None:
    names = ["scam", "drugs"]
    examples = ([_labeled({"scam": 1, "drugs": 0}, "caption")] * 10 + [_labeled({"scam": 1, "drugs": 0}, "image")] * 10
                + [_labeled({"scam": 0, "drugs": 1}, "image")] * 10 + [_labeled({"scam": 0, "drugs": 0}, "caption")] * 100)
    rng = np.random.default_rng(0)
    scores = rng.random((130, 2)) * 0.5
    scores[:10, 0] = 0.9  # caption scams: all above every benign score
    scores[10:20, 0] = np.linspace(0.0, 0.9, 10)  # image scams: spread out
    scores[20:30, 1] = 0.8
    labels = label_matrix(examples, names)
    scam, drugs = category_metrics(names, examples, scores, labels)
    assert scam.positives == 20 and scam.negatives == 110 and drugs.modes["image"].positives == 10
    assert scam.modes["caption"].recall_at_fpr[0.01] == 1.0 and scam.modes["image"].roc_auc < 1.0
    assert scam.recall_at_fpr[0.02] == pytest.approx(
        (10 + (scores[10:20, 0] >= scam.thresholds[0.02]).sum()) / 20)
    assert drugs.modes["both"].positives == 0 and drugs.modes["both"].recall_at_fpr[0.01] is None

    thresholds = choose_thresholds(names, examples, scores, fpr=0.02)
    overall = post_level(names, examples, scores, thresholds)
    assert overall.false_positive_rate <= 0.02 and overall.harmful == 30 and overall.benign == 100
    assert overall.recall_by_mode["caption"] == 1.0 and overall.recall_by_mode["both"] is None
    margined = choose_thresholds(names, examples, scores, fpr=0.02, margin=1.0)
    for name, base in thresholds.items():
        logit = np.log(base / (1 - base)) + 1.0
        assert margined[name] == pytest.approx(1 / (1 + np.exp(-logit)), abs=2e-3) and margined[name] > base


class _CountingEncoder:
    """Encodes a post's text length; counts the posts it was asked to encode."""

    def __init__(self, encoder_id: str) -> None:
        self.encoder_id = encoder_id
        self.spec = HeadSpec((CategorySpec("scam", ("free money",)),), ("a photo",))
        self.encoded = 0

    def encode(self, items: list) -> Encoded:
        self.encoded += len(items)
        lengths = np.array([[len(item.text or "")] for item in items], dtype=np.float32)
        return Encoded(features=lengths, zero_shot=lengths, floor=np.zeros_like(lengths))


def test_encoded_sets_are_cached_by_encoder_prompts_and_content(tmp_path: Path) -> None:
    posts = [LabeledPost(Post(post_id=f"p{i}", user_id="u", text="x" * (i + 1)), {"scam": 0}) for i in range(3)]
    classifier = _CountingEncoder("enc@1")
    first = encode_examples(classifier, posts, batch_size=2, cache_dir=tmp_path)  # type: ignore[arg-type]
    again = encode_examples(classifier, posts, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert classifier.encoded == 3 and np.array_equal(first.features, again.features)
    assert first.features[:, 0].tolist() == [1, 2, 3]
    edited = [*posts[:2], LabeledPost(Post(post_id="p2", user_id="u", text="changed"), {"scam": 0})]
    assert encode_examples(classifier, edited, cache_dir=tmp_path).features[2, 0] == 7  # type: ignore[arg-type]
    other = _CountingEncoder("enc@2")
    encode_examples(other, posts, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert (classifier.encoded, other.encoded) == (6, 3), "an edit or another encoder must re-encode"
    encode_examples(classifier, posts, cache_dir=None)  # type: ignore[arg-type]
    assert classifier.encoded == 9


class _CountingReader:
    """Reads a post as its upper-cased caption; counts the posts it was asked to read."""

    def __init__(self, ocr: str) -> None:
        self.encoder_components = {"image_nsfw": "n@1", "ocr": ocr, "text_encoder": "t@1", "features": "f@1"}
        self.read_posts = 0

    def read(self, items: list) -> list[PostText]:
        self.read_posts += len(items)
        return [PostText(caption=(item.text or "").upper(), ocr_text="", ocr_spaced="", nsfw=0.0, has_image=False)
                for item in items]


def test_posts_read_once_are_not_read_again_when_the_set_grows(tmp_path: Path) -> None:
    posts = [LabeledPost(Post(post_id=f"p{i}", user_id="u", text=f"post {i}"), {"scam": 0}) for i in range(5)]
    reader = _CountingReader("ocr@1")
    first = read_examples(reader, posts[:3], batch_size=2, cache_dir=tmp_path)  # type: ignore[arg-type]
    grown = read_examples(reader, [posts[4], *posts], batch_size=2, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert reader.read_posts == 5, "only the two new posts are read, a repeated one once"
    assert [t.caption for t in first] == ["POST 0", "POST 1", "POST 2"]
    assert [t.caption for t in grown] == ["POST 4", "POST 0", "POST 1", "POST 2", "POST 3", "POST 4"]
    other = _CountingReader("ocr@2")
    read_examples(other, posts, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert other.read_posts == 5, "another OCR model reads every post again"
