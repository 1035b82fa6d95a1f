"""A decision in OpenAI omni-moderation's terms: its 13 category names, scores, flags, input types.

Which omni-moderation categories a policy category stands for is answered by :func:`omni_names`
alone, so the taxonomy mapping can come from the policy without touching the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from moderator.api.schema import InputType, ModerationResult
from moderator.decisions.schema import Decision
from moderator.policy.schema import Action, Category, Policy

OMNI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors",
    "violence", "violence/graphic",
)

# The shipped default policy's categories; other policy categories named like an omni one
# (``self_harm_intent`` for ``self-harm/intent``) map to it directly.
_BY_NAME: Mapping[str, tuple[str, ...]] = {
    "nudity": ("sexual",),
    "violence": ("violence",),
    "drugs": ("illicit",),
    "scam": ("illicit",),
    "hate": ("hate",),
    **{name.replace("/", "_").replace("-", "_"): (name,) for name in OMNI_CATEGORIES},
}


def omni_names(category: Category) -> tuple[str, ...]:
    """The omni-moderation categories a policy category's score stands for (none: not reported)."""
    return _BY_NAME.get(category.name, ())


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
    return ModerationResult(flagged=decision.action is not Action.ALLOW, categories=flags,
                            category_scores=scores, category_applied_input_types=applied)
