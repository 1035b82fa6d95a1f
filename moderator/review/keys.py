"""Redis key names of the review queue, in one place (the Lua scripts build the same names).

A single Redis is assumed: the scripts reach items by names they compute, which Redis Cluster forbids.
"""

from __future__ import annotations

from dataclasses import dataclass

from moderator.keys import REVIEW

PREFIX = f"{REVIEW.prefix}:"  # the scripts append names to it


@dataclass(frozen=True)
class ReviewKeys:
    """Key names under one prefix (tests may isolate themselves with their own)."""

    prefix: str = PREFIX

    def item(self, item_id: str) -> str:
        """Hash: data (ReviewItem JSON), policy, priority, status, reviewer, lease_until, outcome."""
        return f"{self.prefix}item:{item_id}"

    def image(self, item_id: str) -> str:
        """String: the review JPEG."""
        return f"{self.prefix}image:{item_id}"

    def queue(self, policy: str) -> str:
        """Sorted set of queued item ids by priority (lowest first)."""
        return f"{self.prefix}queue:{policy}"

    def leases(self, policy: str) -> str:
        """Sorted set of claimed item ids by lease expiry (epoch ms)."""
        return f"{self.prefix}leases:{policy}"

    def history(self, item_id: str) -> str:
        """List of the item's audit entries, oldest first."""
        return f"{self.prefix}history:{item_id}"

    def session(self, digest: str) -> str:
        """String: a browser session (JSON), stored under the SHA-256 of its cookie."""
        return f"{self.prefix}session:{digest}"

    def held(self, reviewer: str) -> str:
        """Set of the item ids a reviewer has claimed (checked against the items when counted)."""
        return f"{self.prefix}held:{reviewer}"

    def user_items(self, user_id: str) -> str:
        """List of the item ids of one user's posts sent to review, newest first (capped)."""
        return f"{self.prefix}user:{user_id}"

    @property
    def tokens(self) -> str:
        """Prefix of the API token store (`tokens.TokenStore`)."""
        return f"{self.prefix}tokens:"

    @property
    def throttle(self) -> str:
        """Prefix of the failed sign-in counters and locks (`throttle.LoginThrottle`)."""
        return f"{self.prefix}throttle:"

    @property
    def security(self) -> str:
        """Stream of failed sign-ins and refused tokens, capped apart from the audit stream."""
        return f"{self.prefix}security"

    @property
    def policies(self) -> str:
        """Set of policy names that have a queue."""
        return f"{self.prefix}policies"

    @property
    def audit(self) -> str:
        """Stream of every audit entry (field ``entry``), trimmed to the configured length."""
        return f"{self.prefix}audit"

    @property
    def outbox(self) -> str:
        """Hash item id -> reviewer decision JSON not yet acknowledged by the broker."""
        return f"{self.prefix}outbox"

    @property
    def labels(self) -> str:
        """Hash item id -> LabelRecord JSON (the training labels reviewers produced)."""
        return f"{self.prefix}labels"
