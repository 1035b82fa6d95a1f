"""Train heads on labeled posts and measure how well scores separate harmful from benign ones.

Used by ``moderator heads train`` and ``moderator heads eval``: the data set is encoded once by
the classifier's frozen encoders, then every head stack is scored on the same features. Quality is
measured where a moderation system operates: recall at a low false-positive rate (1% and 2%), per
category and per mode (harmful wording in the caption only, only inside the image, or both).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moderator.evaldata import MODES, LabeledPost, to_model_input
from moderator.model.calibration import Calibration
from moderator.model.crossval import raised
from moderator.model.heads import HeadKind, TaskHead, train_head
from moderator.model.scoring import Encoded, HeadedClassifier

if TYPE_CHECKING:
    from moderator.model.offline import OfflineStackClassifier, PostText

REPORTED_FPRS = (0.01, 0.02)
# Encoded labeled sets, so that train, eval and every L2 candidate run the (slow) OCR once.
FEATURE_CACHE_DIR = Path(tempfile.gettempdir()) / "moderator-features"


def _cache_key(classifier: HeadedClassifier, examples: Sequence[LabeledPost]) -> str:
    """Digest of the encoder, the prompts (zero-shot logits depend on them) and every post's content."""
    digest = hashlib.sha256(f"{classifier.encoder_id}\n{classifier.spec.fingerprint()}\n".encode())
    for ex in examples:
        digest.update(ex.post.model_dump_json().encode())
    return digest.hexdigest()[:24]


def encode_examples(
    classifier: HeadedClassifier,
    examples: Sequence[LabeledPost],
    batch_size: int = 32,
    cache_dir: Path | None = FEATURE_CACHE_DIR,
) -> Encoded:
    """Encode labeled posts in fixed-order batches and stack the results (reproducible scores).

    Scores do not depend on batch composition, so the result is a function of encoder, prompts and
    posts: it is kept in ``cache_dir`` under a digest of those (``None``: no cache). The offline
    stack embeds the texts of ``read_examples`` (cached too), so OCR runs once per post.
    """
    from moderator.model.offline import OfflineStackClassifier

    path = cache_dir / f"{_cache_key(classifier, examples)}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as cached:
            return Encoded(features=cached["features"], zero_shot=cached["zero_shot"], floor=cached["floor"])
    if isinstance(classifier, OfflineStackClassifier):
        texts = read_examples(classifier, examples, batch_size, cache_dir)
        parts = [classifier.encode_read(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    else:
        parts = [
            classifier.encode([to_model_input(ex.post) for ex in examples[start : start + batch_size]])
            for start in range(0, len(examples), batch_size)
        ]
    encoded = Encoded(
        features=np.concatenate([p.features for p in parts]),
        zero_shot=np.concatenate([p.zero_shot for p in parts]),
        floor=np.concatenate([p.floor for p in parts]),
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npz")
        np.savez(partial, features=encoded.features, zero_shot=encoded.zero_shot, floor=encoded.floor)
        partial.replace(path)
    return encoded


def read_examples(
    classifier: OfflineStackClassifier, examples: Sequence[LabeledPost], batch_size: int = 32,
    cache_dir: Path | None = FEATURE_CACHE_DIR,
) -> list[PostText]:
    """The offline stack's reading of labeled posts (OCR, open_nsfw, text clean-up), kept in
    ``cache_dir`` per post under a digest of those components: tuning the text layers, every fold
    after it and a labeled set grown by new posts reuse what was read before."""
    from moderator.model.offline import PostText

    components = {k: classifier.encoder_components[k] for k in ("image_nsfw", "ocr", "text_encoder", "features")}
    path = None
    if cache_dir is not None:
        path = cache_dir / f"texts-{hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()[:24]}.json"
    known: dict[str, dict[str, Any]] = {}
    if path is not None and path.is_file():
        known = json.loads(path.read_text(encoding="utf-8"))
    keys = [hashlib.sha256(ex.post.model_dump_json().encode()).hexdigest()[:32] for ex in examples]
    first: dict[str, int] = {}  # each unread post once, at its first position
    for k, key in enumerate(keys):
        if key not in known:
            first.setdefault(key, k)
    missing = list(first.values())
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        for k, text in zip(chunk, classifier.read([to_model_input(examples[k].post) for k in chunk]), strict=True):
            known[keys[k]] = asdict(text)
    if path is not None and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(known), encoding="utf-8")
        partial.replace(path)
    return [PostText(**known[key]) for key in keys]


def embedding_slots(classifier: HeadedClassifier) -> tuple[tuple[int, int], ...]:
    """Column ranges of the two embeddings in the classifier's feature vector (for shared heads).

    Both classifiers lay features out as ``[embedding A, embedding B, flags...]`` with equal widths:
    caption and image-text embeddings (offline stack), image and text embeddings (dual encoder).
    """
    from moderator.model.dual_encoder import DualEncoderClassifier
    from moderator.model.offline import OfflineStackClassifier

    if isinstance(classifier, OfflineStackClassifier):
        width = classifier.text.dim
    elif isinstance(classifier, DualEncoderClassifier):
        width = classifier.embed_dim
    else:
        raise TypeError(f"no known feature layout for {type(classifier).__name__}")
    return ((0, width), (width, 2 * width))


def fit_heads(
    classifier: HeadedClassifier,
    encoded: Encoded,
    labels: np.ndarray,
    *,
    name: str,
    kind: HeadKind,
    steps: int,
    l2: float = 1e-2,
    benign_weight: float = 1.0,
    seed: int = 0,
) -> tuple[TaskHead, Calibration]:
    """A trained head on the frozen features, and Platt-calibrated zero-shot heads, from one data set."""
    names = classifier.spec.names
    slots = embedding_slots(classifier) if kind == "shared" else ()
    head = train_head(
        encoded.features, labels, names, classifier.encoder_id, name=name, kind=kind, steps=steps, l2=l2, seed=seed,
        slots=slots, benign_weight=benign_weight,
    )
    return head, zero_shot_calibration(classifier, encoded, labels)


def zero_shot_calibration(classifier: HeadedClassifier, encoded: Encoded, labels: np.ndarray) -> Calibration:
    """Platt calibration of ``classifier``'s zero-shot heads on ``encoded`` posts and their labels."""
    return Calibration(classifier.default_calibration).fit(classifier.spec.names, encoded.zero_shot, labels)


def threshold_at_fpr(negative_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold at which at most ``fpr`` of the negatives score ``>=`` it.

    With ``k = floor(fpr * n)`` negatives allowed, it sits just above the ``(k+1)``-th highest
    negative score (ties count against it), so the rate holds on these negatives exactly.
    """
    if len(negative_scores) == 0:
        return 0.0
    ranked = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(fpr * len(ranked) + 1e-9))
    if allowed >= len(ranked):
        return 0.0
    return float(np.nextafter(ranked[allowed], np.inf))


def recall_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> float | None:
    """Share of positives scoring ``>= threshold`` (None without positives)."""
    return float((scores[positive] >= threshold).mean()) if positive.any() else None


def _auc(scores: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not positive.any() or not negative.any():
        return None
    keep = positive | negative
    return float(roc_auc_score(positive[keep], scores[keep]))


@dataclass(frozen=True)
class ModeMetrics:
    """One category's positives of one mode against all of its negatives."""

    positives: int
    roc_auc: float | None
    recall_at_fpr: dict[float, float | None]


@dataclass(frozen=True)
class CategoryMetrics:
    """Ranking quality of one category's scores, and recall at thresholds set for a false-positive rate."""

    category: str
    positives: int
    negatives: int
    roc_auc: float | None
    thresholds: dict[float, float]
    recall_at_fpr: dict[float, float | None]
    modes: dict[str, ModeMetrics]


def category_metrics(
    names: Sequence[str], examples: Sequence[LabeledPost], scores: np.ndarray, labels: np.ndarray,
    fprs: Sequence[float] = REPORTED_FPRS,
) -> list[CategoryMetrics]:
    """Per category: ROC-AUC, and for each rate the threshold holding it on these negatives and the
    recall there, overall and per mode. Categories without positives report ``None`` rankings."""
    modes = np.array([ex.mode for ex in examples])
    results = []
    for j, name in enumerate(names):
        positive, negative = labels[:, j] == 1, labels[:, j] == 0
        s = scores[:, j]
        thresholds = {fpr: threshold_at_fpr(s[negative], fpr) for fpr in fprs}
        results.append(
            CategoryMetrics(
                category=name,
                positives=int(positive.sum()),
                negatives=int(negative.sum()),
                roc_auc=_auc(s, positive, negative),
                thresholds=thresholds,
                recall_at_fpr={fpr: recall_at(s, positive, t) for fpr, t in thresholds.items()},
                modes={
                    mode: ModeMetrics(
                        positives=int((positive & (modes == mode)).sum()),
                        roc_auc=_auc(s, positive & (modes == mode), negative),
                        recall_at_fpr={fpr: recall_at(s, positive & (modes == mode), t)
                                       for fpr, t in thresholds.items()},
                    )
                    for mode in MODES
                },
            )
        )
    return results


@dataclass(frozen=True)
class PostLevel:
    """The policy's view: a post is flagged when any category reaches its threshold."""

    harmful: int
    benign: int
    recall: float
    false_positive_rate: float
    recall_by_mode: dict[str, float | None]
    recall_by_category: dict[str, float | None]


def post_level(
    names: Sequence[str], examples: Sequence[LabeledPost], scores: np.ndarray, thresholds: Mapping[str, float]
) -> PostLevel:
    """Harmful posts flagged (any category at or above its threshold) and benign posts flagged; the
    harmful recall also per mode and per category (posts labeled with it, flagged by any rule)."""
    columns = [j for j, name in enumerate(names) if name in thresholds]
    limits = np.array([thresholds[names[j]] for j in columns])
    flagged = (scores[:, columns] >= limits).any(axis=1)
    harmful = np.array([ex.harmful for ex in examples])
    modes = np.array([ex.mode for ex in examples])
    return PostLevel(
        harmful=int(harmful.sum()),
        benign=int((~harmful).sum()),
        recall=float(flagged[harmful].mean()) if harmful.any() else 0.0,
        false_positive_rate=float(flagged[~harmful].mean()) if (~harmful).any() else 0.0,
        recall_by_mode={mode: recall_at(flagged.astype(float), harmful & (modes == mode), 0.5) for mode in MODES},
        recall_by_category={name: recall_at(flagged.astype(float), np.array([ex.labels.get(name) == 1
                                                                             for ex in examples]), 0.5)
                            for name in names},
    )


def choose_thresholds(
    names: Sequence[str], examples: Sequence[LabeledPost], scores: np.ndarray, fpr: float, *, floor: float = 0.05,
    margin: float = 0.0,
) -> dict[str, float]:
    """Per-category thresholds for a post-level false-positive rate on labeled (dev) posts.

    Each category gets the lowest threshold (rounded up to 3 decimals, at least ``floor``) that
    flags at most ``fpr / c`` of the benign posts, ``c`` being the number of categories with
    positives, so that all categories together flag at most ``fpr`` of them, then moved up by
    ``margin`` in logit space: benign phrasings never seen score above every benign dev post far
    more often than ``fpr`` (on dev halves, 0.2 without a margin). Categories without positives
    are left out: their threshold is a policy decision, not the data's.
    """
    benign = np.array([not ex.harmful for ex in examples])
    scored = [j for j in range(len(names)) if any(ex.labels.get(names[j]) == 1 for ex in examples)]
    share = fpr / max(1, len(scored))
    thresholds = {}
    for j in scored:
        base = min(max(threshold_at_fpr(scores[benign, j], share), 1e-6), 1 - 1e-6)
        moved = float(raised(np.array([base]), margin)[0])
        thresholds[names[j]] = min(0.999, max(floor, math.ceil(moved * 1000) / 1000))
    return thresholds
