"""The policies currently serving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moderator.policy.schema import Policy


class PolicyStore:
    """Holds the serving policies and picks the one that applies to a post."""

    def __init__(self, policies: Mapping[str, Policy], default: str = "default") -> None:
        if default not in policies:
            raise ValueError(f"no policy named {default!r}; have {sorted(policies)}")
        self.policies = dict(policies)
        self.default = default

    def select(self, metadata: Mapping[str, Any]) -> Policy:
        """The policy for a post; a ``policy`` metadata key may name another serving policy."""
        name = metadata.get("policy")
        return self.policies.get(name, self.policies[self.default]) if isinstance(name, str) else self.policies[self.default]
