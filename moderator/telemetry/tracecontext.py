"""W3C trace context (traceparent) read from posts and written to decisions."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    """The first Kafka header called ``name``."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


def trace_id_from(traceparent: bytes | None) -> str | None:
    """The trace id of a valid traceparent header, else None."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.decode("ascii", "replace").strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def child_traceparent(trace_id: str | None) -> tuple[str, str]:
    """A traceparent for a new span in ``trace_id`` (or a new trace): returns (trace_id, header value)."""
    trace_id = trace_id or secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"
