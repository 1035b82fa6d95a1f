"""The audit log: every review action (who, when, what, the state before and after), newest first.

Queue actions are written by the Lua scripts in the same transaction as the change they record;
this module writes the account events (logins) and reads both.
"""

from __future__ import annotations

import time

import orjson
from redis.asyncio import Redis

from moderator.review.keys import ReviewKeys
from moderator.review.models import AuditAction, AuditEntry


class AuditLog:
    """Reads and appends the audit stream and the per-item histories."""

    def __init__(self, redis: Redis, keys: ReviewKeys, max_entries: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_entries = max_entries

    async def record(self, actor: str, action: AuditAction, detail: str = "") -> None:
        """Append an event that concerns no item (logins, logouts)."""
        entry = {"at": int(time.time() * 1000), "actor": actor, "action": action.value, "detail": detail}
        await self.redis.xadd(self.keys.audit, {"entry": orjson.dumps(entry)}, maxlen=self.max_entries,
                              approximate=True)

    async def recent(self, limit: int = 200, before: str | None = None) -> tuple[list[AuditEntry], str | None]:
        """Up to ``limit`` entries, newest first, older than stream id ``before``; and the next page's id."""
        upper = f"({before}" if before else "+"
        rows = await self.redis.xrevrange(self.keys.audit, max=upper, min="-", count=limit)
        entries = [AuditEntry.model_validate_json(fields[b"entry"]) for _, fields in rows]
        next_page = rows[-1][0].decode() if len(rows) == limit else None
        return entries, next_page

    async def history(self, item_id: str) -> list[AuditEntry]:
        """Every action on one item, oldest first."""
        return [AuditEntry.model_validate_json(raw) for raw in await self.redis.lrange(self.keys.history(item_id), 0, -1)]
