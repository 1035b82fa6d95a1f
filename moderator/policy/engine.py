"""Evaluate a policy on a post's scores, metadata and bank matches: pure, deterministic, no I/O.

Rules run in file order. Every rule whose condition holds fires and is reported; a fired rule with
``stop: true`` ends the evaluation. The most severe action among the fired rules wins (ties: the
earliest rule), else the policy's ``default_action``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, model_validator

from moderator.banks.schema import BankMatch
from moderator.policy.schema import (
    Action,
    AllCondition,
    AnyCondition,
    BankCondition,
    Condition,
    MetadataCondition,
    NotCondition,
    Policy,
    ScoreCondition,
)


class ReasonKind(StrEnum):
    """What the first test of a fired rule that held was about."""

    SCORE = "score"  # a category's score against its threshold
    BANK = "bank"  # a hash-bank match: similarity (1 - distance/256) against the similarity required
    METADATA = "metadata"  # a metadata test: 1.0 against 1.0 (a test that held)
    RULE = "rule"  # no positive test (e.g. only a ``not``)


def reason_label(kind: ReasonKind, name: str | None) -> str:
    """The display form kept in ``Reason.category``: the category, ``bank:<name>``, ``metadata:<key>`` or ``rule``."""
    if kind is ReasonKind.SCORE:
        return name or ""
    return f"{kind.value}:{name}" if name is not None else kind.value


class Reason(BaseModel):
    """One rule that fired, as written into decisions.

    ``kind`` and ``name`` (the category, bank or metadata key; none for ``rule``), ``score`` and
    ``threshold`` describe the first test of the rule that held (see ``ReasonKind``).
    ``category`` is the same in one string for display and for readers of earlier decisions;
    code reads ``kind`` and ``name``, never parses it.
    """

    kind: ReasonKind = ReasonKind.SCORE
    name: str | None = None
    category: str
    score: float
    threshold: float
    action: Action
    rule: str
    label: str | None = None
    bank: BankMatch | None = None

    @model_validator(mode="after")
    def _score_reason_names_its_category(self) -> Reason:
        # Reasons written before ``kind``/``name`` existed (recorded decisions) were score reasons by default.
        if self.kind is ReasonKind.SCORE and self.name is None:
            self.name = self.category
        return self

    @classmethod
    def of(cls, kind: ReasonKind, name: str | None, **fields: Any) -> Reason:
        """A reason with its display ``category`` derived from ``kind`` and ``name``."""
        return cls(kind=kind, name=name, category=reason_label(kind, name), **fields)


class PolicyVerdict(BaseModel):
    """The policy's answer for one post."""

    action: Action
    reasons: list[Reason]

    @property
    def deciding(self) -> Reason | None:
        """The earliest fired rule whose action is the verdict's (None when the default action applied)."""
        return next((r for r in self.reasons if r.action is self.action), None)

    @property
    def from_bank(self) -> bool:
        """Whether a bank match made a rule fire."""
        return any(r.bank is not None for r in self.reasons)


_RANK = {ReasonKind.RULE: 0, ReasonKind.METADATA: 1, ReasonKind.BANK: 2, ReasonKind.SCORE: 3}


@dataclass(frozen=True)
class _Evidence:
    """Why a condition held: the first score test, else the first bank match, else the first metadata test."""

    kind: ReasonKind = ReasonKind.RULE
    name: str | None = None
    score: float = 1.0
    threshold: float = 1.0
    bank: BankMatch | None = None

    def merge(self, other: _Evidence) -> _Evidence:
        """Combine the evidence of two conditions that both held (``all``): the stronger kind, earlier first."""
        first = self if _RANK[self.kind] >= _RANK[other.kind] else other
        return _Evidence(first.kind, first.name, first.score, first.threshold, self.bank or other.bank)


def metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key (``user.trust``), or None when any step is missing."""
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _metadata_holds(cond: MetadataCondition, metadata: Mapping[str, Any]) -> bool:
    value = metadata_value(metadata, cond.metadata)
    if cond.exists is not None:
        return (value is not None) is cond.exists
    if cond.not_in is not None:
        return value not in cond.not_in
    if value is None:
        return False
    if cond.equals is not None:
        return bool(value == cond.equals)
    if cond.in_ is not None:
        return value in cond.in_
    number = _number(value)
    return (number is not None and (cond.gte is None or number >= cond.gte)
            and (cond.lt is None or number < cond.lt))


def _check(cond: Condition, scores: Mapping[str, float], metadata: Mapping[str, Any],
           matches: Sequence[BankMatch]) -> _Evidence | None:
    """The evidence that ``cond`` holds, or None when it does not."""
    if isinstance(cond, ScoreCondition):
        score = scores.get(cond.score)
        if score is None or (cond.gte is not None and score < cond.gte) or (cond.lt is not None and score >= cond.lt):
            return None
        return _Evidence(ReasonKind.SCORE, cond.score, score, cond.gte if cond.gte is not None else cond.lt)
    if isinstance(cond, MetadataCondition):
        return _Evidence(ReasonKind.METADATA, cond.metadata) if _metadata_holds(cond, metadata) else None
    if isinstance(cond, BankCondition):
        hit = next((m for m in matches if m.bank == cond.bank and m.distance <= cond.max_distance), None)
        if hit is None:
            return None
        return _Evidence(ReasonKind.BANK, cond.bank, round(1 - hit.distance / 256, 6),
                         round(1 - cond.max_distance / 256, 6), bank=hit)
    if isinstance(cond, AnyCondition):
        return next((e for c in cond.any if (e := _check(c, scores, metadata, matches)) is not None), None)
    if isinstance(cond, AllCondition):
        evidence = _Evidence()
        for child in cond.all:
            found = _check(child, scores, metadata, matches)
            if found is None:
                return None
            evidence = evidence.merge(found)
        return evidence
    assert isinstance(cond, NotCondition)
    return _Evidence() if _check(cond.not_, scores, metadata, matches) is None else None


def holds(condition: Condition, scores: Mapping[str, float], metadata: Mapping[str, Any],
          matches: Sequence[BankMatch] = ()) -> bool:
    """Whether one condition holds for a post."""
    return _check(condition, scores, metadata, matches) is not None


def evaluate(policy: Policy, scores: Mapping[str, float], metadata: Mapping[str, Any] | None = None,
             matches: Sequence[BankMatch] = ()) -> PolicyVerdict:
    """Apply the rules in order; the most severe fired action wins (else the policy's default)."""
    reasons: list[Reason] = []
    for rule in policy.rules:
        evidence = _check(rule.condition, scores, metadata or {}, matches)
        if evidence is None:
            continue
        reasons.append(Reason.of(evidence.kind, evidence.name, score=evidence.score, threshold=evidence.threshold,
                                 action=rule.action, rule=rule.name, label=rule.reason or rule.name,
                                 bank=evidence.bank))
        if rule.stop:
            break
    action = max((r.action for r in reasons), key=lambda a: a.severity, default=policy.default_action)
    return PolicyVerdict(action=action, reasons=reasons)


def bank_verdict(policy: Policy, metadata: Mapping[str, Any], matches: Sequence[BankMatch]) -> PolicyVerdict | None:
    """The verdict when a bank rule fires before any score is known (the model is then skipped), else None."""
    if not matches:
        return None
    verdict = evaluate(policy, {}, metadata, matches)
    return verdict if verdict.from_bank else None
