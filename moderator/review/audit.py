"""The audit log: every review action (who, when, what, the state before and after), newest first.

Queue actions are written by the Lua scripts in the same transaction as the change they record;
this module writes the account events (logins) and reads both. Unauthenticated traffic (failed
sign-ins, refused tokens) goes to a separate capped security stream, so no amount of it can push an
authenticated action out of the audit log; the names it carries are what someone typed, kept as
``attempted``, never as the actor.
"""

from __future__ import annotations

import time

import orjson
from redis.asyncio import Redis

from moderator.review.keys import ReviewKeys
from moderator.review.models import AuditAction, AuditEntry

UNAUTHENTICATED = "(unauthenticated)"


class AuditLog:
    """Reads and appends the audit stream and the per-item histories."""

    def __init__(self, redis: Redis, keys: ReviewKeys, max_entries: int, max_security_entries: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_entries = max_entries
        self.max_security_entries = max_security_entries

    async def record(self, actor: str, action: AuditAction, detail: str = "") -> None:
        """Append an event that concerns no item (logins, logouts)."""
        entry = {"at": int(time.time() * 1000), "actor": actor, "action": action.value, "detail": detail}
        await self.redis.xadd(self.keys.audit, {"entry": orjson.dumps(entry)}, maxlen=self.max_entries,
                              approximate=True)

    async def refused(self, action: AuditAction, address: str, attempted: str | None = None) -> None:
        """Append a refused credential (from an unauthenticated caller) to the security stream."""
        entry = {"at": int(time.time() * 1000), "actor": UNAUTHENTICATED, "action": action.value,
                 "attempted": attempted, "detail": f"from {address}"}
        await self.redis.xadd(self.keys.security, {"entry": orjson.dumps(entry)}, maxlen=self.max_security_entries,
                              approximate=True)

    async def recent(self, limit: int = 200, before: str | None = None,
                     security: bool = False) -> tuple[list[AuditEntry], str | None]:
        """Up to ``limit`` entries, newest first, older than stream id ``before``; and the next page's id.

        ``security`` reads the failed sign-ins instead of the audit log.
        """
        upper = f"({before}" if before else "+"
        stream = self.keys.security if security else self.keys.audit
        rows = await self.redis.xrevrange(stream, max=upper, min="-", count=limit)
        entries = [AuditEntry.model_validate_json(fields[b"entry"]) for _, fields in rows]
        next_page = rows[-1][0].decode() if len(rows) == limit else None
        return entries, next_page

    async def history(self, item_id: str) -> list[AuditEntry]:
        """Every action on one item, oldest first."""
        return [AuditEntry.model_validate_json(raw) for raw in await self.redis.lrange(self.keys.history(item_id), 0, -1)]
