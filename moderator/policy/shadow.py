"""Shadow policies: candidates evaluated beside the live policy, whose disagreements are counted, never acted on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from moderator.banks.schema import BankMatch
from moderator.policy.engine import PolicyVerdict, evaluate
from moderator.policy.schema import Action, Policy


class PolicyOutcome(BaseModel):
    """What one policy decided for a post, and the rule that decided it."""

    name: str
    version: str
    action: Action
    rule: str | None


class ShadowDisagreement(BaseModel):
    """A post on which a shadow policy would have acted differently from the live one."""

    post_id: str
    live: PolicyOutcome
    shadow: PolicyOutcome
    scores: dict[str, float]
    decided_at: datetime


@dataclass
class ShadowCounts:
    """Per shadow policy: posts compared, disagreements, and disagreements by ``live->shadow`` action."""

    evaluated: int = 0
    disagreed: int = 0
    transitions: dict[str, int] = field(default_factory=dict)


def outcome(policy: Policy, verdict: PolicyVerdict) -> PolicyOutcome:
    """A policy's verdict in short."""
    deciding = verdict.deciding
    return PolicyOutcome(name=policy.name, version=policy.version, action=verdict.action,
                         rule=deciding.rule if deciding is not None else None)


class ShadowMonitor:
    """Evaluates shadow policies on live inputs and counts where they disagree."""

    def __init__(self) -> None:
        self.counts: dict[str, ShadowCounts] = {}

    def compare(self, shadows: Sequence[Policy], live: Policy, verdict: PolicyVerdict, post_id: str,
                scores: Mapping[str, float], metadata: Mapping[str, Any],
                matches: Sequence[BankMatch]) -> list[ShadowDisagreement]:
        """Evaluate each shadow on the inputs the live policy saw; return the disagreements."""
        found: list[ShadowDisagreement] = []
        for shadow in shadows:
            counts = self.counts.setdefault(shadow.name, ShadowCounts())
            counts.evaluated += 1
            candidate = evaluate(shadow, scores, metadata, matches)
            if candidate.action is verdict.action:
                continue
            counts.disagreed += 1
            key = f"{verdict.action.value}->{candidate.action.value}"
            counts.transitions[key] = counts.transitions.get(key, 0) + 1
            found.append(ShadowDisagreement(post_id=post_id, live=outcome(live, verdict),
                                            shadow=outcome(shadow, candidate), scores=dict(scores),
                                            decided_at=datetime.now(UTC)))
        return found
