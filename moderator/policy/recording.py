"""What is recorded of each decision for backtests (``moderator.pipeline.recording`` writes and reads it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from moderator.banks.schema import BankMatch
from moderator.policy.engine import Reason
from moderator.policy.schema import Action


class ScoreRecord(BaseModel):
    """What a policy saw and decided for one post: enough to decide it again under another policy."""

    post_id: str
    scores: dict[str, float]
    metadata: dict[str, Any] = Field(default_factory=dict)
    matches: list[BankMatch] = Field(default_factory=list)
    policy: str
    version: str
    action: Action
    reasons: list[Reason] = Field(default_factory=list)
    model_version: str = ""
    decided_at: datetime
