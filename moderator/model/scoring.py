"""From encoder outputs to category scores: calibrated zero-shot heads, overridden by trained heads.

Both classifiers (the offline stack and the transformers dual encoder) encode a batch into an
``Encoded`` and score it with a ``HeadStack``. Keeping the two steps apart lets ``heads eval``
encode a data set once and compare zero-shot against trained heads on the same features.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from moderator.model.base import Classifier, HeadSpec, ModelInput
from moderator.model.calibration import CALIBRATION_FILE, Calibration
from moderator.model.heads import PACKAGED_HEADS_DIR, TaskHead, load_heads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """What the frozen encoders make of a batch, before any head.

    ``features``: ``(n, d)`` input of trained heads. ``zero_shot``: ``(n, c)`` uncalibrated logits,
    one column per category of the HeadSpec. ``floor``: ``(n, c)`` scores that no head can lower,
    from a dedicated detector (open_nsfw for a nudity category), zeros elsewhere.
    """

    features: np.ndarray
    zero_shot: np.ndarray
    floor: np.ndarray

    def rows(self, index: np.ndarray) -> Encoded:
        """The posts at ``index`` (a fold's training or held-out rows)."""
        return Encoded(self.features[index], self.zero_shot[index], self.floor[index])


class HeadStack:
    """The heads that score one HeadSpec on one encoder: calibrated zero-shot, then trained heads."""

    def __init__(
        self,
        names: Sequence[str],
        calibration: Calibration,
        heads: Sequence[TaskHead] = (),
        required_heads: Mapping[str, str] | None = None,
    ) -> None:
        """``required_heads`` maps a category to the only head allowed to score it (policy ``head:``)."""
        self.names = list(names)
        self.calibration = calibration
        self.heads = list(heads)
        required = dict(required_heads or {})
        # category -> (head index, output column); a category claimed twice is a deployment error.
        self._routes: dict[str, tuple[int, int]] = {}
        for h, head in enumerate(self.heads):
            for col, category in enumerate(head.categories):
                if category not in self.names or required.get(category, head.name) != head.name:
                    continue
                if category in self._routes:
                    other = self.heads[self._routes[category][0]].name
                    raise ValueError(f"category {category!r} is scored by both head {other!r} and {head.name!r}")
                self._routes[category] = (h, col)
        for category, head_name in required.items():
            if category in self.names and category not in self._routes:
                log.warning("category %r wants head %r, which is not loaded: scoring it zero-shot", category, head_name)

    @classmethod
    def load(
        cls, spec: HeadSpec, *, encoder: str, default_calibration: tuple[float, float], heads_dir: Path | None
    ) -> HeadStack:
        """Zero-shot calibration and trained heads for ``encoder`` from ``heads_dir``, or when it is
        None from the heads shipped in the package (those trained for another encoder are skipped)."""
        required = {c.name: c.head for c in spec.categories if c.head}
        directory = heads_dir if heads_dir is not None else PACKAGED_HEADS_DIR
        calibration = Calibration.load_matching(
            directory / CALIBRATION_FILE, encoder=encoder, fingerprint=spec.fingerprint(), default=default_calibration
        )
        heads = load_heads(directory, encoder, quiet=heads_dir is None)
        return cls(spec.names, calibration, heads, required_heads=required)

    def trained_categories(self) -> list[str]:
        """Categories scored by a trained head rather than zero-shot."""
        return [name for name in self.names if name in self._routes]

    def components(self) -> dict[str, str]:
        """Entries for ``ModelInfo.components`` naming each head and its version."""
        parts = {f"head:{head.name}": f"{head.kind}@{head.version}" for head in self.heads}
        if self._routes:
            # Which head scores which category changes scores, so it is part of the version too.
            parts["head_routes"] = ",".join(f"{c}={self.heads[h].name}" for c, (h, _) in sorted(self._routes.items()))
        if self.calibration.per_category:
            cal = ",".join(f"{k}={t:.4g}/{b:.4g}" for k, (t, b) in sorted(self.calibration.per_category.items()))
            parts["zero_shot_calibration"] = cal
        return parts

    def scores(self, encoded: Encoded) -> np.ndarray:
        """``(n, c)`` probabilities in [0, 1]."""
        probs = self.calibration.apply(self.names, encoded.zero_shot)
        if len(encoded.features):
            outputs = [head.predict(encoded.features) for head in self.heads]
            for j, name in enumerate(self.names):
                if name in self._routes:
                    h, col = self._routes[name]
                    probs[:, j] = outputs[h][:, col]
        return np.clip(np.maximum(probs, encoded.floor), 0.0, 1.0)


def as_dicts(names: Sequence[str], probs: np.ndarray) -> list[dict[str, float]]:
    """Rows of probabilities as ``{category: score}``, rounded so equal inputs print equal scores."""
    return [{name: round(float(p), 6) for name, p in zip(names, row, strict=True)} for row in probs]


class HeadedClassifier(Classifier, Protocol):
    """A classifier whose encoders and heads can be used apart (training and evaluation)."""

    spec: HeadSpec
    encoder_id: str
    default_calibration: tuple[float, float]
    stack: HeadStack

    def encode(self, items: Sequence[ModelInput]) -> Encoded:
        """Run the frozen encoders on a batch."""
        ...
