"""Train heads on labeled posts and measure how well scores rank them.

Used by ``moderator heads train`` and ``moderator heads eval``: the data set is encoded once by
the classifier's frozen encoders, then every head stack is scored on the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moderator.evaldata import LabeledPost, label_matrix, to_model_input
from moderator.model.calibration import Calibration
from moderator.model.heads import HeadKind, TaskHead, train_head
from moderator.model.scoring import Encoded, HeadedClassifier


def encode_examples(classifier: HeadedClassifier, examples: Sequence[LabeledPost], batch_size: int = 32) -> Encoded:
    """Encode labeled posts in batches and stack the results."""
    parts = [
        classifier.encode([to_model_input(ex.post) for ex in examples[start : start + batch_size]])
        for start in range(0, len(examples), batch_size)
    ]
    return Encoded(
        features=np.concatenate([p.features for p in parts]),
        zero_shot=np.concatenate([p.zero_shot for p in parts]),
        floor=np.concatenate([p.floor for p in parts]),
    )


def fit_heads(
    classifier: HeadedClassifier,
    encoded: Encoded,
    labels: np.ndarray,
    *,
    name: str,
    kind: HeadKind,
    steps: int,
    seed: int = 0,
) -> tuple[TaskHead, Calibration]:
    """A trained head on the frozen features, and Platt-calibrated zero-shot heads, from one data set."""
    names = classifier.spec.names
    head = train_head(
        encoded.features, labels, names, classifier.encoder_id, name=name, kind=kind, steps=steps, seed=seed
    )
    calibration = Calibration(classifier.default_calibration).fit(names, encoded.zero_shot, labels)
    return head, calibration


@dataclass(frozen=True)
class CategoryMetrics:
    """Ranking and thresholded quality of one category's scores."""

    category: str
    positives: int
    negatives: int
    roc_auc: float | None
    precision: float
    recall: float
    f1: float
    threshold_at_precision: float | None
    recall_at_precision: float | None


def threshold_for_precision(scores: np.ndarray, labels: np.ndarray, target: float) -> tuple[float, float] | None:
    """Lowest score threshold whose precision reaches ``target``, with its recall; None if none does."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # precision/recall have one more entry than thresholds (the empty selection); skip it.
    ok = np.flatnonzero(precision[:-1] >= target)
    if len(ok) == 0:
        return None
    first = int(ok[0])
    return float(thresholds[first]), float(recall[first])


def category_metrics(
    names: Sequence[str], scores: np.ndarray, labels: np.ndarray, *, threshold: float, target_precision: float
) -> list[CategoryMetrics]:
    """Per-category precision, recall and F1 at ``threshold``, ROC-AUC, and the target-precision threshold."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    results = []
    for j, name in enumerate(names):
        known = ~np.isnan(labels[:, j])
        y, s = labels[known, j].astype(int), scores[known, j]
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        both = positives > 0 and negatives > 0
        p, r, f, _ = precision_recall_fscore_support(
            y, (s >= threshold).astype(int), average="binary", zero_division=0.0
        )
        at_precision = threshold_for_precision(s, y, target_precision) if both else None
        results.append(
            CategoryMetrics(
                category=name,
                positives=positives,
                negatives=negatives,
                roc_auc=float(roc_auc_score(y, s)) if both else None,
                precision=float(p),
                recall=float(r),
                f1=float(f),
                threshold_at_precision=at_precision[0] if at_precision else None,
                recall_at_precision=at_precision[1] if at_precision else None,
            )
        )
    return results


def image_text_auc(
    names: Sequence[str], examples: Sequence[LabeledPost], scores: np.ndarray
) -> dict[str, float | None]:
    """ROC-AUC per category counting as positives only posts whose harmful text is inside the image."""
    from sklearn.metrics import roc_auc_score

    labels = label_matrix(examples, names)
    image_only = np.array([ex.kind == "image_text_only" for ex in examples])
    result: dict[str, float | None] = {}
    for j, name in enumerate(names):
        positive = (labels[:, j] == 1) & image_only
        negative = labels[:, j] == 0
        keep = positive | negative
        result[name] = (
            float(roc_auc_score(positive[keep], scores[keep, j])) if positive.any() and negative.any() else None
        )
    return result
