"""Decide: the policy's verdict on the post's scores, metadata and bank matches, escalated when asked, as a Decision."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.trace import get_current_span

from moderator.banks.schema import BankMatch
from moderator.cache.store import Scores
from moderator.decisions.schema import Decision, DecisionSource, PolicyRef
from moderator.ingest.validate import ValidPost
from moderator.model.base import ModelInfo
from moderator.pipeline.banks import BankResult
from moderator.pipeline.escalation import EscalationTier
from moderator.policy.engine import PolicyVerdict, ReasonKind, evaluate
from moderator.policy.schema import Policy
from moderator.telemetry import tracing
from moderator.telemetry.instrument import Telemetry


@dataclass(frozen=True)
class Decided:
    """Everything known about one post once it is decided, before publishing."""

    post: ValidPost
    policy: Policy
    verdict: PolicyVerdict
    matches: Sequence[BankMatch]
    decision: Decision


class Decide:
    """Evaluate the policy (unless a bank rule already decided), then let the escalation tier adjust it."""

    def __init__(self, escalation: EscalationTier | None, telemetry: Telemetry) -> None:
        self.escalation = escalation
        self.telemetry = telemetry

    async def __call__(self, post: ValidPost, policy: Policy, bank: BankResult, scores: Scores,
                       source: DecisionSource, model: ModelInfo, started: float) -> Decided:
        """The decision; ``started`` (monotonic seconds) is when the post's processing began."""
        with self.telemetry.stage("policy", span=tracing.POLICY) as span:
            verdict = bank.verdict if bank.verdict is not None else evaluate(policy, scores, post.metadata,
                                                                             bank.matches)
            span.set_attributes({"moderator.policy.name": policy.name, "moderator.policy.version": policy.version,
                                 "moderator.action": verdict.action.value})
        if self.escalation is not None:
            verdict, model = await self.escalation.apply(policy, verdict, scores, post, model)
        decision = Decision(
            post_id=post.post_id, action=verdict.action, scores=scores, reasons=verdict.reasons,
            policy=PolicyRef(name=policy.name, version=policy.version), model=model, source=source,
            trace_id=tracing.trace_id_of(get_current_span()),
            latency_ms=round((time.monotonic() - started) * 1000, 2), decided_at=datetime.now(UTC),
            taxonomy={r.name: policy.provider_mappings[r.name] for r in verdict.reasons
                      if r.kind is ReasonKind.SCORE and r.name in policy.provider_mappings},
        )
        return Decided(post, policy, verdict, bank.matches, decision)
