"""Build the configured classifier for a policy's categories."""

from __future__ import annotations

from collections.abc import Sequence

from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.scoring import HeadedClassifier
from moderator.settings import Settings


def load_classifier(settings: Settings, heads: HeadSpec) -> HeadedClassifier:
    """A transformers dual encoder when ``MODERATOR_MODEL`` is set, else the packaged offline stack."""
    if settings.model:
        from moderator.model.dual_encoder import DualEncoderClassifier

        return DualEncoderClassifier(settings.model, heads, device=settings.device, heads_dir=settings.heads_dir,
                                     gpu_jpeg_decode=settings.gpu_jpeg_decode)
    from moderator.model.offline import OfflineStackClassifier

    return OfflineStackClassifier(heads, device=settings.device, heads_dir=settings.heads_dir)


class LoadedOnFirstUse:
    """A classifier loaded only when something is first scored (a dry run whose posts carry scores never loads it).

    Before loading, ``info`` names no model; after, it is the loaded classifier's.
    """

    def __init__(self, settings: Settings, heads: HeadSpec) -> None:
        self.settings = settings
        self.heads = heads
        self._loaded: HeadedClassifier | None = None

    @property
    def info(self) -> ModelInfo:
        """The loaded classifier's info, or a placeholder before anything was scored."""
        return self._loaded.info if self._loaded is not None else ModelInfo(name="(not loaded)", version="")

    def score_batch(self, items: Sequence[ModelInput]) -> list[dict[str, float]]:
        """Load on the first call, then score."""
        if self._loaded is None:
            self._loaded = load_classifier(self.settings, self.heads)
        return self._loaded.score_batch(items)
