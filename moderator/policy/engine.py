"""Evaluate a policy on a post's scores: pure, deterministic, no I/O."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from moderator.policy.schema import Action, Policy


class Reason(BaseModel):
    """One rule that fired, as written into decisions."""

    category: str
    score: float
    threshold: float
    action: Action
    rule: str


class Verdict(BaseModel):
    """The policy's answer for one post."""

    action: Action
    reasons: list[Reason]


def evaluate(policy: Policy, scores: Mapping[str, float]) -> Verdict:
    """Apply every rule; the most severe action among the fired rules wins (else the default)."""
    reasons = [
        Reason(category=r.category, score=scores[r.category], threshold=r.threshold, action=r.action, rule=r.name)
        for r in policy.rules
        if r.category in scores and scores[r.category] >= r.threshold
    ]
    action = max((r.action for r in reasons), key=lambda a: a.severity, default=policy.default_action)
    return Verdict(action=action, reasons=reasons)
