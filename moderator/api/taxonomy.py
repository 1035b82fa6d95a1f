"""A decision in OpenAI omni-moderation's terms: its 13 category names, scores, flags, input types.

Which omni-moderation categories a policy category stands for is the category's own
``maps_to.openai`` (declared in the policy and carried in decisions as ``taxonomy``), so a platform
switching from OpenAI keeps the names its rules already use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from moderator.api.schema import InputType, ModerationResult
from moderator.decisions.schema import Decision
from moderator.policy.schema import Action, Category, Policy
from moderator.policy.taxonomy import OpenAICategory

OMNI_CATEGORIES: tuple[str, ...] = get_args(OpenAICategory)


def omni_names(category: Category) -> tuple[str, ...]:
    """The omni-moderation categories a policy category's score stands for (none: not reported)."""
    return tuple(category.maps_to.openai)


def moderation_result(decision: Decision, policy: Policy, input_types: Iterable[InputType]) -> ModerationResult:
    """One omni-moderation result for a decided post.

    A category's score is the highest score among the policy categories mapped to it; it is flagged
    when a rule on one of those categories sent the post to review or block. ``flagged`` is the
    policy's action (a hash-bank or metadata rule can flag a post without flagging a category).
    """
    mapping = {category.name: omni_names(category) for category in policy.categories}
    types = list(input_types)
    scores = dict.fromkeys(OMNI_CATEGORIES, 0.0)
    applied: dict[str, list[InputType]] = {name: [] for name in OMNI_CATEGORIES}
    for category, score in decision.scores.items():
        for name in mapping.get(category, ()):
            scores[name] = max(scores[name], score)
            applied[name] = types
    flags = dict.fromkeys(OMNI_CATEGORIES, False)
    for reason in decision.reasons:
        if reason.action is not Action.ALLOW:
            for name in mapping.get(reason.category, ()):
                flags[name] = True
    # Every value is built here with its declared type: constructed, not validated a second time.
    return ModerationResult.model_construct(flagged=decision.action is not Action.ALLOW, categories=flags,
                                            category_scores=scores, category_applied_input_types=applied)
