"""Validate: raw record bytes → a ``ValidPost`` (schema, limits, image bytes, content hash) or an IngestError."""

from __future__ import annotations

import httpx

from moderator.ingest.validate import IngestLimits, ValidPost, validate_record
from moderator.telemetry import tracing
from moderator.telemetry.instrument import Telemetry


class Validate:
    """The first stage: everything hostile input can do is stopped here, with a dead-letter reason."""

    def __init__(self, limits: IngestLimits, fetch_client: httpx.AsyncClient | None, telemetry: Telemetry) -> None:
        self.limits = limits
        self.fetch_client = fetch_client
        self.telemetry = telemetry

    async def __call__(self, raw: bytes | None) -> ValidPost:
        """The valid post; raises ``IngestError`` with its reason otherwise."""
        with self.telemetry.stage("validate", span=tracing.VALIDATE):
            return await validate_record(raw, self.limits, self.fetch_client)
