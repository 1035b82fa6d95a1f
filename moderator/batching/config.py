"""One batching block per model (Triton's ``dynamic_batching``): everything about how its batches form."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BatchingConfig(BaseModel):
    """How one batcher forms batches.

    A batch closes at ``max_batch`` items or ``max_wait_ms`` after its first item; with ``adaptive``
    it also closes as soon as no item would join before that deadline (none queued or on its way,
    or, for a batcher given no count of those, none expected at the measured arrival rate). With
    ``preferred_sizes`` a closing batch is cut to the largest preferred size it reaches (the rest
    start the next batch), e.g. the sizes a GPU kernel was tuned or captured for.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch: int = Field(32, ge=1)
    max_wait_ms: float = Field(20.0, ge=0.0)
    adaptive: bool = False
    preferred_sizes: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _preferred_within_max(self) -> BatchingConfig:
        if any(size < 1 or size > self.max_batch for size in self.preferred_sizes):
            raise ValueError(f"preferred_sizes must lie in [1, max_batch={self.max_batch}]")
        return self
