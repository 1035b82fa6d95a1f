"""The policies currently serving; swapped whole, so a post never sees half an edit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moderator.policy.policyset import PolicySet
from moderator.policy.schema import Policy


class PolicyStore:
    """Holds the serving PolicySet and picks the policy that applies to a post."""

    def __init__(self, current: PolicySet | Mapping[str, Policy]) -> None:
        self._current = current if isinstance(current, PolicySet) else PolicySet.of(current)

    @property
    def current(self) -> PolicySet:
        return self._current

    @property
    def policies(self) -> Mapping[str, Policy]:
        return self._current.policies

    @property
    def default(self) -> str:
        return self._current.default

    def swap(self, newer: PolicySet) -> None:
        """Serve ``newer`` from now on."""
        self._current = newer

    def select(self, metadata: Mapping[str, Any]) -> Policy:
        """The policy for a post, chosen by its metadata (see ``PolicySet.select``)."""
        return self._current.select(metadata)

    def shadows_of(self, policy: Policy) -> list[Policy]:
        """Candidate policies to evaluate beside ``policy``."""
        return self._current.shadows_of(policy.name)
