"""Prometheus instruments of the HTTP API, registered beside the stream's so one ``/metrics`` shows both.

Model batches, cache hits and misses are counted once for both paths by the pipeline itself;
these count what only the API sees: requests, their latency and outcome, and the posts it decided.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from moderator.decisions.schema import Decision
from moderator.telemetry.metrics import SECONDS_BUCKETS


class ApiMetrics:
    """The API's instruments in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("moderator_api_requests", "HTTP API requests answered, by endpoint and status.",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("moderator_api_request_seconds", "Wall time of an API request, body read to "
                                 "response.", ["endpoint"], buckets=SECONDS_BUCKETS, registry=registry)
        self.in_flight = Gauge("moderator_api_requests_in_flight", "API requests admitted and not yet answered.",
                               registry=registry)
        self.decisions = Counter("moderator_api_decisions", "Posts decided over the API, by endpoint, action and "
                                 "score source.", ["endpoint", "action", "source"], registry=registry)

    def decided(self, endpoint: str, decision: Decision) -> None:
        """Count one post decided for ``endpoint``."""
        self.decisions.labels(endpoint, decision.action.value, decision.source.value).inc()
