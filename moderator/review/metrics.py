"""Prometheus metrics of the review app, in a registry of its own (served at /metrics to admins)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class ReviewMetrics:
    """Sign-in failures and throttling: what brute force looks like from the outside."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.auth_failures = Counter("moderator_review_auth_failures", "Refused credentials, by kind "
                                     "(login: name and token from the form; token: a bearer token).", ["kind"],
                                     registry=self.registry)
        self.throttled = Counter("moderator_review_auth_throttled", "Attempts answered 429 because their address "
                                 "or account must wait.", ["kind"], registry=self.registry)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
