"""Replay recorded decisions under a candidate policy and report which actions would change."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from moderator.policy.engine import Reason, evaluate
from moderator.policy.recording import ScoreRecord
from moderator.policy.schema import Policy

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``24h``, ``7d``, ``30m`` ... ago, or an ISO-8601 time (UTC when it names no zone)."""
    if match := _DURATION.match(value.strip()):
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: float(amount)})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"--since takes a duration like 24h / 7d or an ISO time, not {value!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ActionChange(BaseModel):
    """One post whose action the candidate policy would change."""

    post_id: str
    before: str
    after: str
    category: str
    rule_before: str | None
    rule_after: str | None
    scores: dict[str, float]


class BacktestReport(BaseModel):
    """How a candidate policy would have decided the recorded posts, against what was decided."""

    policy: str
    version: str
    replayed: int = 0
    skipped: int = Field(0, description="Records decided by another policy, left out.")
    changed: int = 0
    transitions: dict[str, int] = Field(default_factory=dict, description="``before->after`` action counts.")
    by_category: dict[str, int] = Field(default_factory=dict)
    examples: dict[str, list[ActionChange]] = Field(default_factory=dict, description="A few changes per category.")


def _deciding(reasons: Iterable[Reason], action: str) -> Reason | None:
    return next((r for r in reasons if r.action.value == action), None)


def _attribution(reason: Reason | None) -> str:
    """The category a change is counted under: the deciding rule's (``bank:...``, ``metadata:...`` included)."""
    return reason.category if reason is not None else "(default action)"


def backtest(policy: Policy, records: Iterable[ScoreRecord], *, all_policies: bool = False,
             examples_per_category: int = 3) -> BacktestReport:
    """Decide every record again under ``policy``; count and sample the changed actions.

    A change is counted under the category of the rule that decided the more severe of the two
    actions: a stricter rule that now blocks, or the old rule that no longer fires.
    """
    report = BacktestReport(policy=policy.name, version=policy.version)
    for record in records:
        if record.policy != policy.name and not all_policies:
            report.skipped += 1
            continue
        report.replayed += 1
        verdict = evaluate(policy, record.scores, record.metadata, record.matches)
        if verdict.action is record.action:
            continue
        old = _deciding(record.reasons, record.action.value)
        new = verdict.deciding
        stricter = verdict.action.severity > record.action.severity
        category = _attribution(new if stricter else old)
        report.changed += 1
        key = f"{record.action.value}->{verdict.action.value}"
        report.transitions[key] = report.transitions.get(key, 0) + 1
        report.by_category[category] = report.by_category.get(category, 0) + 1
        examples = report.examples.setdefault(category, [])
        if len(examples) < examples_per_category:
            examples.append(ActionChange(
                post_id=record.post_id, before=record.action.value, after=verdict.action.value, category=category,
                rule_before=old.rule if old else None, rule_after=new.rule if new else None, scores=record.scores,
            ))
    return report
