"""Per-category temperature and bias that turn zero-shot logits into probabilities.

Zero-shot logits (similarity margins) have an encoder-specific scale that says nothing about
probability. ``p = sigmoid(logit / temperature + bias)`` maps them onto [0, 1]; the default pair is
chosen per encoder, and ``fit`` replaces it per category with Platt scaling on labeled posts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION_FILE = "zero-shot-calibration.json"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass(frozen=True)
class Calibration:
    """``(temperature, bias)`` per category, with a default for categories not listed."""

    default: tuple[float, float] = (1.0, 0.0)
    per_category: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def params(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Temperatures and biases for ``names``, in order."""
        pairs = [self.per_category.get(name, self.default) for name in names]
        return np.array([t for t, _ in pairs], dtype=np.float64), np.array([b for _, b in pairs], dtype=np.float64)

    def apply(self, names: Sequence[str], logits: np.ndarray) -> np.ndarray:
        """``(n, len(names))`` logits -> probabilities."""
        temperature, bias = self.params(names)
        return sigmoid(logits.astype(np.float64) / temperature + bias).astype(np.float32)

    def fit(self, names: Sequence[str], logits: np.ndarray, labels: np.ndarray) -> Calibration:
        """Platt scaling per category; ``labels`` holds 0/1 and NaN for unknown.

        A category keeps its current parameters when its labels lack a class or when the fitted
        slope is not positive (the logit would then rank posts backwards: a prompt problem that
        calibration must not hide).
        """
        from sklearn.linear_model import LogisticRegression

        fitted = dict(self.per_category)
        for j, name in enumerate(names):
            known = ~np.isnan(labels[:, j])
            x, y = logits[known, j].reshape(-1, 1), labels[known, j].astype(int)
            if len(set(y.tolist())) < 2:
                continue
            model = LogisticRegression(C=100.0).fit(x, y)
            slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
            if slope <= 0:
                log.warning("zero-shot logits for %r rank posts backwards; calibration left unchanged", name)
                continue
            fitted[name] = (1.0 / slope, intercept)
        return Calibration(self.default, fitted)

    def to_json(self, *, encoder: str, fingerprint: str) -> str:
        """Serialise with the encoder and prompt fingerprint it was fitted for."""
        payload = {
            "encoder": encoder,
            "prompts_fingerprint": fingerprint,
            "default": list(self.default),
            "per_category": {k: list(v) for k, v in sorted(self.per_category.items())},
        }
        return json.dumps(payload, indent=2)

    @classmethod
    def load_matching(cls, path: Path, *, encoder: str, fingerprint: str, default: tuple[float, float]) -> Calibration:
        """The calibration stored at ``path`` if it was fitted for this encoder and these prompts.

        Otherwise ``default`` alone: a calibration fitted for other prompts would be wrong.
        """
        if not path.is_file():
            return cls(default)
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("encoder") != encoder or payload.get("prompts_fingerprint") != fingerprint:
            log.info("ignoring %s: fitted for another encoder or other prompts", path)
            return cls(default)
        per_category = {k: (float(t), float(b)) for k, (t, b) in payload["per_category"].items()}
        return cls(default, per_category)
