"""Pydantic model of a policy file (policies/*.yaml); `moderator policy schema` exports its JSON Schema.

A policy names its version, the categories the model scores, and rules evaluated in order. A rule
is either the shorthand ``{category, threshold}`` or a ``when`` condition built from score
thresholds, metadata tests, hash-bank matches and their ``any`` / ``all`` / ``not`` combinations.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from moderator.banks.schema import BANK_NAME
from moderator.model.base import CategorySpec, HeadSpec
from moderator.policy.taxonomy import ProviderMapping

Loc = tuple[int | str, ...]
MetadataValue = str | int | float | bool


class Action(StrEnum):
    """What happens to a post, ordered by severity."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.BLOCK: 2}


class PolicyProblems(ValueError):
    """Cross-field problems of a policy, each with the location of the offending field.

    Raised inside validation so pydantic reports it; the loader reads ``problems`` back to name lines.
    """

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems


# The highest block threshold an ``always_block`` category may have.
ALWAYS_BLOCK_MAX_THRESHOLD = 0.5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Category(_Strict):
    """A harm category: prompts for zero-shot heads and/or the trained head expected to score it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field("", description="What the category covers; shown to reviewers and the escalation tier.")
    prompts: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    head: str | None = Field(None, description="The trained head that must score this category (else any head "
                                               "trained on it, else zero-shot).")
    maps_to: ProviderMapping = Field(default_factory=ProviderMapping, description="The OpenAI omni-moderation "
                                     "categories and Llama Guard 3 hazards this category corresponds to.")
    always_block: bool = Field(False, description="No policy may let it through: every live policy needs a block "
                               f"rule on its score with a threshold <= {ALWAYS_BLOCK_MAX_THRESHOLD}, or, when the "
                               "category names hash banks, a block rule on each bank and a review or block rule on "
                               "its score.")
    banks: list[Annotated[str, Field(pattern=BANK_NAME)]] = Field(
        default_factory=list, description="Hash banks holding known items of this category (e.g. csam).")
    threshold_fpr: float | None = Field(None, ge=0.0, le=1.0, description="The false-positive rate on labeled dev "
                                        "data the rules' thresholds for this category were chosen for.")

    @model_validator(mode="after")
    def _scored_somehow(self) -> Category:
        if not self.prompts and self.head is None:
            raise ValueError("a category needs prompts, a trained head, or both")
        return self

    def zero_shot_prompts(self) -> tuple[str, ...]:
        """Prompts for the zero-shot head; a head-only category falls back to its description."""
        return tuple(self.prompts) or (self.description or self.name.replace("_", " "),)


class ScoreCondition(_Strict):
    """True when the category's score is ``>= gte`` (and ``< lt`` when given)."""

    score: str = Field(description="Category name.")
    gte: float | None = Field(None, ge=0.0, le=1.0)
    lt: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _has_bound(self) -> ScoreCondition:
        if self.gte is None and self.lt is None:
            raise ValueError("a score condition needs gte, lt or both")
        return self


class MetadataCondition(_Strict):
    """A test on a post metadata value (``surface``, ``locale``, ``account_age_days``, ``user.trust``...).

    A missing value satisfies only ``not_in`` and ``exists: false``; ``gte`` / ``lt`` need a number.
    """

    metadata: str = Field(min_length=1, description="Metadata key; dots reach into nested objects.")
    equals: MetadataValue | None = None
    in_: list[MetadataValue] | None = Field(None, alias="in", min_length=1)
    not_in: list[MetadataValue] | None = Field(None, min_length=1)
    gte: float | None = None
    lt: float | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _has_test(self) -> MetadataCondition:
        tests = [t for t in ("equals", "in_", "not_in", "gte", "lt", "exists") if getattr(self, t) is not None]
        if not tests:
            raise ValueError("a metadata condition needs one of equals, in, not_in, gte, lt, exists")
        if len(tests) > 1 and set(tests) != {"gte", "lt"}:
            raise ValueError("a metadata condition takes one test (gte and lt may be combined)")
        return self


class BankCondition(_Strict):
    """True when the post's image matches an entry of a hash bank (within ``max_distance`` for PDQ)."""

    bank: str = Field(pattern=BANK_NAME)
    max_distance: int = Field(31, ge=0, le=256, description="Largest Hamming distance (of 256 bits) that matches.")


class AnyCondition(_Strict):
    """True when at least one sub-condition is."""

    any: list[Condition] = Field(min_length=1)


class AllCondition(_Strict):
    """True when every sub-condition is."""

    all: list[Condition] = Field(min_length=1)


class NotCondition(_Strict):
    """True when the sub-condition is not."""

    not_: Condition = Field(alias="not")


_KINDS = ("score", "metadata", "bank", "any", "all", "not")
_KIND_OF_CLASS = {"ScoreCondition": "score", "MetadataCondition": "metadata", "BankCondition": "bank",
                  "AnyCondition": "any", "AllCondition": "all", "NotCondition": "not"}


def _condition_kind(value: Any) -> str | None:
    """The union tag of a condition: by its first kind key (YAML input) or by its class (a model)."""
    if isinstance(value, dict):
        return next((f"{k}-condition" for k in _KINDS if k in value), None)
    kind = _KIND_OF_CLASS.get(type(value).__name__)
    return f"{kind}-condition" if kind else None


# Tags end in "-condition" so they never collide with a YAML key when the loader maps errors to lines.
Condition = Annotated[
    Annotated[ScoreCondition, Tag("score-condition")]
    | Annotated[MetadataCondition, Tag("metadata-condition")]
    | Annotated[BankCondition, Tag("bank-condition")]
    | Annotated[AnyCondition, Tag("any-condition")]
    | Annotated[AllCondition, Tag("all-condition")]
    | Annotated[NotCondition, Tag("not-condition")],
    Discriminator(
        _condition_kind,
        custom_error_type="condition_kind",
        custom_error_message="a condition needs one of the keys: score, metadata, bank, any, all, not",
    ),
]
AnyCondition.model_rebuild()
AllCondition.model_rebuild()
NotCondition.model_rebuild()


def walk(condition: Condition, loc: Loc) -> Iterator[tuple[Condition, Loc]]:
    """Every condition in a tree with its location, parents first."""
    yield condition, loc
    if isinstance(condition, AnyCondition):
        for i, child in enumerate(condition.any):
            yield from walk(child, (*loc, "any", i))
    elif isinstance(condition, AllCondition):
        for i, child in enumerate(condition.all):
            yield from walk(child, (*loc, "all", i))
    elif isinstance(condition, NotCondition):
        yield from walk(condition.not_, (*loc, "not"))


class Rule(_Strict):
    """Fires ``action`` when its condition holds: ``category`` + ``threshold`` (shorthand) or ``when``."""

    name: str = Field(min_length=1)
    description: str = ""
    category: str | None = Field(None, description="Shorthand: fire when this category's score >= threshold.")
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    when: Condition | None = None
    action: Action
    reason: str | None = Field(None, description="Label written into decisions; defaults to the rule name.")
    stop: bool = Field(False, description="When this rule fires, later rules are not evaluated.")

    @model_validator(mode="after")
    def _one_form(self) -> Rule:
        shorthand = self.category is not None or self.threshold is not None
        if shorthand and self.when is not None:
            raise ValueError("give either category + threshold or when, not both")
        if not shorthand and self.when is None:
            raise ValueError("a rule needs category + threshold, or when")
        if shorthand and (self.category is None or self.threshold is None):
            raise ValueError("the shorthand needs both category and threshold")
        return self

    @functools.cached_property
    def condition(self) -> Condition:
        """The rule's condition, with the shorthand expanded (once: rules run for every post)."""
        if self.when is not None:
            return self.when
        assert self.category is not None and self.threshold is not None
        return ScoreCondition(score=self.category, gte=self.threshold)

    @property
    def condition_loc(self) -> Loc:
        """Where the condition is written, relative to the rule."""
        return ("when",) if self.when is not None else ("category",)


class Escalation(_Strict):
    """Ask a generative vision-language model for a second opinion on posts in an uncertainty band."""

    model: str = Field(min_length=1, description="Image-text-to-text checkpoint: a directory or a hub name.")
    band: tuple[Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        (0.4, 0.8), description="[low, high): a post is escalated when a selected category's score lies in it.")
    categories: list[str] | None = Field(
        None, min_length=1, description="Categories to escalate and ask about (default: all of the policy's).")
    on_unsafe: Literal["review", "block"] = Field(
        "review", description="Action when the model answers unsafe (never lowers the policy's action).")
    on_safe: Literal["allow", "keep"] = Field(
        "keep", description="allow: lower to allow when only the escalated categories' rules fired; keep: no change.")
    max_batch: int = Field(4, ge=1, le=256)
    max_wait_ms: float = Field(20.0, ge=0.0)
    max_new_tokens: int = Field(24, ge=1, le=512)

    @property
    def unsafe_action(self) -> Action:
        """``on_unsafe`` as an Action."""
        return Action(self.on_unsafe)


class Policy(_Strict):
    """A named, versioned moderation policy."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="Moderation policy")

    schema_: str | None = Field(None, alias="$schema", description="Editors' JSON Schema reference; ignored.")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: str = Field(min_length=1)
    description: str = ""
    default: bool = Field(False, description="The policy for posts no other policy applies to (one per directory).")
    applies_when: Condition | None = Field(None, description="Metadata condition selecting this policy for a post.")
    shadow_of: str | None = Field(
        None, description="Evaluate beside this live policy and count disagreements; never decides a post."
    )
    neutral_prompts: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["an ordinary photo", "a harmless everyday post"], min_length=1
    )
    categories: list[Category] = Field(
        default_factory=list, description="Declared by the default policy only; the others inherit them."
    )
    rules: list[Rule] = Field(default_factory=list)
    default_action: Action = Action.ALLOW
    escalation: Escalation | None = Field(None, description="Optional generative-VLM second opinion.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads `version: 3` as an int; versions are labels, so keep them as text.
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        problems = self.problems(inherited=None)
        if problems:
            raise PolicyProblems(problems)
        return self

    def problems(self, inherited: list[Category] | None) -> list[tuple[Loc, str]]:
        """Cross-field problems with their locations; ``inherited`` are the default policy's categories."""
        found: list[tuple[Loc, str]] = []
        found += _duplicates([c.name for c in self.categories], "categories", "category")
        found += _duplicates([r.name for r in self.rules], "rules", "rule")
        if self.shadow_of is not None and (self.default or self.applies_when is not None):
            found.append((("shadow_of",), "a shadow policy cannot be the default or have applies_when"))
        if self.default and self.applies_when is not None:
            found.append((("applies_when",), "the default policy applies to every post; drop applies_when"))
        if self.applies_when is not None:
            for cond, loc in walk(self.applies_when, ("applies_when",)):
                if isinstance(cond, ScoreCondition | BankCondition):
                    found.append((loc, "applies_when can only test metadata (scores are not known yet)"))
        if self.escalation is not None and self.escalation.band[0] >= self.escalation.band[1]:
            found.append((("escalation", "band"), "the band needs low < high"))
        if self.escalation is not None and self.shadow_of is not None:
            found.append((("escalation",), "a shadow policy never acts; escalation belongs on the live policy"))
        categories = self.categories or inherited
        if categories is None:
            return found  # nothing to check category references against yet
        known = {c.name for c in categories}
        if self.escalation is not None:
            for i, name in enumerate(self.escalation.categories or ()):
                if name not in known:
                    found.append((("escalation", "categories", i),
                                  f"escalation uses unknown category {name!r} (known: {', '.join(sorted(known))})"))
        for i, rule in enumerate(self.rules):
            for cond, loc in walk(rule.condition, ("rules", i, *rule.condition_loc)):
                if isinstance(cond, ScoreCondition) and cond.score not in known:
                    where = loc if rule.when is not None else (*loc[:-1], "category")
                    known_list = ", ".join(sorted(known))
                    message = f"rule {rule.name!r} uses unknown category {cond.score!r} (known: {known_list})"
                    found.append((where, message))
        return found + self._always_block_problems(categories)

    def _always_block_problems(self, categories: list[Category]) -> list[tuple[Loc, str]]:
        """A live policy must block every ``always_block`` category, and no escalation may lower
        that block to allow.

        Blocking means a block rule on its score at a low threshold, or, for a category with hash
        banks, a block rule on each bank plus a review-or-block rule on its score: where the encoder
        cannot judge the category (MiniLM text and sexual_minors), a low block threshold on its
        score blocks look-alikes such as sex education posts without catching abuse, so the banks
        block and the score only sends to people.
        """
        if self.shadow_of is not None:
            return []
        found: list[tuple[Loc, str]] = []
        for category in (c for c in categories if c.always_block):
            if not (self._blocks_on_score(category) or self._blocks_on_banks(category)):
                banked = (f", or block rules on {', '.join(category.banks)} and a review rule on its score"
                          if category.banks else "")
                found.append((("rules",), f"category {category.name!r} is always_block: add a rule "
                              f"{{category: {category.name}, threshold: <= {ALWAYS_BLOCK_MAX_THRESHOLD}, "
                              f"action: block}}{banked}"))
            escalation = self.escalation
            if escalation is not None and escalation.on_safe == "allow" and (
                    escalation.categories is None or category.name in escalation.categories):
                found.append((("escalation", "on_safe"), f"category {category.name!r} is always_block: an "
                              "escalation may not allow it; list other categories or use on_safe: keep"))
        return found

    def _blocks_on_score(self, category: Category) -> bool:
        return any(r.category == category.name and r.action is Action.BLOCK and r.threshold is not None
                   and r.threshold <= ALWAYS_BLOCK_MAX_THRESHOLD for r in self.rules)

    def _blocks_on_banks(self, category: Category) -> bool:
        blocked = {r.when.bank for r in self.rules
                   if r.action is Action.BLOCK and isinstance(r.when, BankCondition)}
        flagged = any(r.category == category.name and r.action in (Action.REVIEW, Action.BLOCK) for r in self.rules)
        return bool(category.banks) and set(category.banks) <= blocked and flagged

    @functools.cached_property
    def declared_banks(self) -> frozenset[str]:
        """Banks a category names as holding its known items (an operator fills them; computed once)."""
        return frozenset(bank for c in self.categories for bank in c.banks)

    @functools.cached_property
    def provider_mappings(self) -> dict[str, ProviderMapping]:
        """Each category's OpenAI / Llama Guard mapping, by category name (computed once)."""
        return {c.name: c.maps_to for c in self.categories}

    @functools.cached_property
    def bank_limits(self) -> dict[str, int]:
        """Banks the rules consult, with the largest distance any rule accepts for each (computed once)."""
        limits: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            for cond, _ in walk(rule.condition, ("rules", i)):
                if isinstance(cond, BankCondition):
                    limits[cond.bank] = max(limits.get(cond.bank, 0), cond.max_distance)
        return limits

    def head_spec(self) -> HeadSpec:
        """The categories and prompts a classifier needs to score posts for this policy."""
        return HeadSpec(
            categories=tuple(
                CategorySpec(c.name, c.zero_shot_prompts(), c.description, c.head) for c in self.categories
            ),
            neutral_prompts=tuple(self.neutral_prompts),
        )


def _duplicates(names: list[str], field: Literal["categories", "rules"], what: str) -> list[tuple[Loc, str]]:
    seen: set[str] = set()
    found: list[tuple[Loc, str]] = []
    for i, name in enumerate(names):
        if name in seen:
            found.append(((field, i, "name"), f"duplicate {what} name {name!r}"))
        seen.add(name)
    return found


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, as editors consume it (keys as written in YAML)."""
    schema = Policy.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
