"""Prepare: a post becomes the model's input (image decoded, bounded, RGB; normalised text).

Its own stage, beside inference and never inside it (Triton/DALI style): decoding runs on worker
threads while the previous batch is on the model, and a preparation pool (e.g. GPU decoding) can
replace it without touching inference.
"""

from __future__ import annotations

from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.model.base import ModelInput
from moderator.telemetry.instrument import Telemetry


class Prepare:
    """``await prepare(post) -> ModelInput``; a bad image raises ``IngestError`` (dead-lettered)."""

    def __init__(self, limits: IngestLimits, telemetry: Telemetry) -> None:
        self.limits = limits
        self.telemetry = telemetry

    async def __call__(self, post: ValidPost) -> ModelInput:
        """Decode on a worker thread and pair the image with the normalised text."""
        with self.telemetry.stage("decode"):
            return await post.model_input(self.limits)
