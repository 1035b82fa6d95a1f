"""The error value of the ingest stage: a dead-letter reason with a human-readable detail."""

from __future__ import annotations

from moderator.ingest.schema import DeadLetterReason


class IngestError(Exception):
    """A record that cannot be moderated; becomes a DeadLetter, never a crash."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
