"""Build the configured classifier for a policy's categories."""

from __future__ import annotations

from moderator.model.base import HeadSpec
from moderator.model.scoring import HeadedClassifier
from moderator.settings import Settings


def load_classifier(settings: Settings, heads: HeadSpec) -> HeadedClassifier:
    """A transformers dual encoder when ``MODERATOR_MODEL`` is set, else the packaged offline stack."""
    if settings.model:
        from moderator.model.dual_encoder import DualEncoderClassifier

        return DualEncoderClassifier(settings.model, heads, device=settings.device, heads_dir=settings.heads_dir)
    from moderator.model.offline import OfflineStackClassifier

    return OfflineStackClassifier(heads, device=settings.device, heads_dir=settings.heads_dir)
