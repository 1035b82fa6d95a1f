"""Failed sign-ins slow down whoever makes them: per client address and per account, in Redis.

After ``free`` failures within the window every further failure locks that address (or account)
for a wait that doubles each time, up to a ceiling; while locked, every attempt is answered 429 with
Retry-After, even with the right credentials, so guessing gets no faster by being right. Counters
live in Redis, so every app replica sees the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

from moderator.settings import Settings

# KEYS[1] failure counter, KEYS[2] lock; ARGV[1] window s, [2] free failures, [3] first wait ms, [4] longest wait ms.
# Returns the lock's length in ms (0: still free).
_FAILED = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local over = n - tonumber(ARGV[2])
if over <= 0 then return 0 end
local wait = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(over - 1, 40))
redis.call('SET', KEYS[2], n, 'PX', math.ceil(wait))
return math.ceil(wait)
"""


@dataclass(frozen=True)
class Throttled:
    """A locked address or account: how long until the next attempt is heard."""

    retry_after_s: int


class LoginThrottle:
    """Counts failed sign-ins by address and by account name; says who must wait."""

    def __init__(self, redis: Redis, prefix: str, settings: Settings) -> None:
        self.redis = redis
        self.prefix = prefix
        self._failed = redis.register_script(_FAILED)
        self._args = [settings.review_login_window_s, settings.review_login_free_attempts,
                      int(settings.review_login_backoff_s * 1000), int(settings.review_login_backoff_max_s * 1000)]

    def _keys(self, kind: str, value: str) -> tuple[str, str]:
        return f"{self.prefix}fail:{kind}:{value}", f"{self.prefix}lock:{kind}:{value}"

    def _subjects(self, address: str, account: str | None) -> list[tuple[str, str]]:
        return [("addr", address)] + ([("account", account)] if account else [])

    async def check(self, address: str, account: str | None = None) -> Throttled | None:
        """Whether this address (or account) must wait before trying again."""
        waits = [await self.redis.pttl(self._keys(kind, value)[1]) for kind, value in self._subjects(address, account)]
        longest = max(waits)
        return Throttled(max(1, math.ceil(longest / 1000))) if longest > 0 else None

    async def failed(self, address: str, account: str | None = None) -> Throttled | None:
        """Count a failure; the wait it imposes, if any."""
        waits = [await self._failed(keys=list(self._keys(kind, value)), args=self._args)
                 for kind, value in self._subjects(address, account)]
        longest = max(waits)
        return Throttled(max(1, math.ceil(longest / 1000))) if longest > 0 else None

    async def succeeded(self, account: str) -> None:
        """The account's owner signed in: forget its failures (the address keeps its count)."""
        await self.redis.delete(*self._keys("account", account))
