"""A checked set of policies: which one applies to a post, and which shadows run beside it."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moderator.model.base import HeadSpec
from moderator.policy.engine import holds
from moderator.policy.schema import Policy


@dataclass(frozen=True)
class PolicySet:
    """Policies by name (categories resolved from the default), with the YAML text of each."""

    policies: Mapping[str, Policy]
    default: str
    texts: Mapping[str, str]
    sources: Mapping[str, str]

    @classmethod
    def of(cls, policies: Mapping[str, Policy]) -> PolicySet:
        """A set from policies already resolved (no file texts): the default is flagged or named ``default``."""
        default = next((p.name for p in policies.values() if p.default), "default")
        if default not in policies:
            raise ValueError(f"no default policy among {sorted(policies)}")
        return cls(dict(policies), default, {}, {name: name for name in policies})

    @property
    def default_policy(self) -> Policy:
        return self.policies[self.default]

    @property
    def live(self) -> list[Policy]:
        """Policies that decide posts: the selective ones in file-name order, the default last."""
        ordered = sorted(self.policies.values(), key=lambda p: self.sources[p.name])
        return [p for p in ordered if p.shadow_of is None and p.name != self.default] + [self.default_policy]

    def select(self, metadata: Mapping[str, Any]) -> Policy:
        """The first live policy whose ``applies_when`` holds for the post's metadata, else the default."""
        for policy in self.live:
            if policy.applies_when is not None and holds(policy.applies_when, {}, metadata):
                return policy
        return self.default_policy

    def shadows_of(self, name: str) -> list[Policy]:
        """Candidate policies evaluated beside the live policy ``name``."""
        return [p for p in self.policies.values() if p.shadow_of == name]

    def head_spec(self) -> HeadSpec:
        """What the classifier scores: the default policy's categories."""
        return self.default_policy.head_spec()

    def diff(self, newer: PolicySet) -> str:
        """A unified diff of the policy files, from this set to ``newer``."""
        lines: list[str] = []
        for name in sorted(set(self.texts) | set(newer.texts)):
            old, new = self.texts.get(name, ""), newer.texts.get(name, "")
            if old != new:
                lines += difflib.unified_diff(
                    old.splitlines(keepends=True), new.splitlines(keepends=True),
                    fromfile=self.sources.get(name, "/dev/null"), tofile=newer.sources.get(name, "/dev/null"),
                )
        return "".join(lines)
