"""Escalation rules: which posts a policy escalates to a generative VLM and how its answer adjusts the verdict.

A policy with an ``escalation:`` block sends every post whose score for an escalated category lies
in ``band`` to a vision-language model (``moderator.model.escalation.VlmEscalator``) and lets its
answer adjust the policy's action (``adjust``): unsafe raises it to ``on_unsafe``, safe lowers it
to allow only when ``on_safe: allow`` and only the escalated categories' rules fired, and no
verdict keeps it. Pure: the stage that builds the models, batches the posts and caches the
answers is ``moderator.pipeline.escalation``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from moderator.model.base import HeadSpec
from moderator.model.escalation import VlmAnswer, in_uncertainty_band
from moderator.policy.engine import PolicyVerdict, Reason, ReasonKind
from moderator.policy.schema import Action, Policy


def escalation_spec(policy: Policy) -> HeadSpec:
    """The categories the VLM is asked about: the block's subset, else all of the policy's."""
    spec = policy.head_spec()
    assert policy.escalation is not None
    wanted = policy.escalation.categories
    if wanted is None:
        return spec
    return HeadSpec(tuple(c for c in spec.categories if c.name in wanted), spec.neutral_prompts)


def escalated_categories(policy: Policy, scores: Mapping[str, float]) -> list[str]:
    """The escalated categories whose score lies in the policy's band (empty: no escalation)."""
    if policy.escalation is None:
        return []
    wanted = set(escalation_spec(policy).names)
    low, high = policy.escalation.band
    return in_uncertainty_band({k: v for k, v in scores.items() if k in wanted}, low, high)


def _label(assessed: VlmAnswer | None) -> str:
    if assessed is None or assessed.unsafe is None:
        return "escalation: no verdict"
    if not assessed.unsafe:
        return "escalation: safe"
    return f"escalation: unsafe ({', '.join(assessed.categories)})" if assessed.categories else "escalation: unsafe"


def adjust(policy: Policy, verdict: PolicyVerdict, scores: Mapping[str, float], banded: Sequence[str],
           assessed: VlmAnswer | None) -> PolicyVerdict:
    """The policy's verdict after the VLM's answer about a post whose ``banded`` categories were escalated.

    Unsafe raises the action to ``on_unsafe`` (never lowers it). Safe lowers it to allow only with
    ``on_safe: allow`` and only when every fired rule rests on an escalated category's score (a
    bank, metadata or confident-score rule stands). No verdict (unreadable answer, model failure)
    keeps the action: garbage never loosens a decision. A reason records the answer either way.
    """
    assert policy.escalation is not None and banded
    block = policy.escalation
    action = verdict.action
    named = [c for c in (assessed.categories if assessed is not None else ()) if c in scores]
    if assessed is not None and assessed.unsafe:
        action = max(action, block.unsafe_action, key=lambda a: a.severity)
    elif (assessed is not None and assessed.unsafe is False and block.on_safe == "allow"
          and all(r.kind is ReasonKind.SCORE and r.name in banded for r in verdict.reasons)):
        action = Action.ALLOW
    category = (named or sorted(banded, key=lambda c: -scores[c]))[0]
    reason = Reason.of(ReasonKind.SCORE, category, score=scores[category], threshold=block.band[0],
                    action=block.unsafe_action if assessed is not None and assessed.unsafe else action,
                    rule=f"escalation:{policy.name}", label=_label(assessed))
    return PolicyVerdict(action=action, reasons=[*verdict.reasons, reason])


def build_key(policy: Policy) -> str:
    """What an escalator and its answers depend on: the model, the answer length and the categories asked about.

    Band, actions and batching are read per post, so editing them needs no new escalator and keeps
    the cached verdicts.
    """
    assert policy.escalation is not None
    spec = escalation_spec(policy)
    payload = [policy.escalation.model, policy.escalation.max_new_tokens,
               [[c.name, c.description, list(c.prompts)] for c in spec.categories]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


