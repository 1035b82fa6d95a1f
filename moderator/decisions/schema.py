"""Wire model of the decisions topic (docs/contract.md: Decision)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from moderator.model.base import ModelInfo
from moderator.policy.engine import Reason
from moderator.policy.schema import Action
from moderator.policy.taxonomy import ProviderMapping


class DecisionSource(StrEnum):
    """Where the scores behind a decision came from."""

    MODEL = "model"
    CACHE = "cache"
    REVIEWER = "reviewer"
    BANK = "bank"  # a hash-bank rule decided before any score: the model was skipped


class PolicyRef(BaseModel):
    """Which policy decided."""

    name: str
    version: str


class Decision(BaseModel):
    """The moderation outcome for one post."""

    post_id: str
    action: Action
    scores: dict[str, float]
    reasons: list[Reason]
    policy: PolicyRef
    model: ModelInfo
    source: DecisionSource
    trace_id: str | None = None
    latency_ms: float
    decided_at: datetime
    taxonomy: dict[str, ProviderMapping] = Field(
        default_factory=dict, description="For each category behind a reason, the OpenAI omni-moderation "
        "categories and Llama Guard 3 hazards it maps to (the policy's maps_to).")
