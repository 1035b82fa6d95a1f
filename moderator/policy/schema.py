"""Pydantic model of a policy file (policies/*.yaml)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moderator.model.base import CategorySpec, HeadSpec


class Action(StrEnum):
    """What happens to a post, ordered by severity."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.BLOCK: 2}


class Category(BaseModel):
    """A harm category and the prompts that describe it to zero-shot heads."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    prompts: list[str] = Field(min_length=1)


class Rule(BaseModel):
    """Fires ``action`` when ``category``'s score reaches ``threshold``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    category: str
    threshold: float = Field(ge=0.0, le=1.0)
    action: Action


class Policy(BaseModel):
    """A named, versioned moderation policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    neutral_prompts: list[str] = Field(
        default_factory=lambda: ["an ordinary photo", "a harmless everyday post"], min_length=1
    )
    categories: list[Category] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    default_action: Action = Action.ALLOW

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads `version: 3` as an int; versions are labels, so keep them as text.
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate category names: {sorted({n for n in names if names.count(n) > 1})}")
        rule_names = [r.name for r in self.rules]
        if len(set(rule_names)) != len(rule_names):
            raise ValueError(f"duplicate rule names: {sorted({n for n in rule_names if rule_names.count(n) > 1})}")
        for rule in self.rules:
            if rule.category not in names:
                raise ValueError(f"rule {rule.name!r} uses unknown category {rule.category!r}")
        return self

    def head_spec(self) -> HeadSpec:
        """The categories and prompts a classifier needs to score posts for this policy."""
        return HeadSpec(
            categories=tuple(CategorySpec(c.name, tuple(c.prompts), c.description) for c in self.categories),
            neutral_prompts=tuple(self.neutral_prompts),
        )
