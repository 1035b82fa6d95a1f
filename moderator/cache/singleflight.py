"""Single flight: identical work running at the same time runs once, and every caller shares its outcome.

The failure rule is one: every caller of a key gets the same result or the same exception (a
cancelled leader cancels its followers). A flight may be held open after its result is known
(``hold``), e.g. until a write-behind lands, so callers arriving meanwhile still share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Flights by key: ``run(key, compute)`` computes once per key at a time."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}
        self._holds: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Flights in the air (computing, or held open after their result)."""
        return len(self._flights)

    def joinable(self, key: K) -> bool:
        """Whether a caller of ``key`` would share a flight already in the air."""
        return key in self._flights

    async def run(self, key: K, compute: Callable[[], Awaitable[V]],
                  hold: Callable[[V], Awaitable[None]] | None = None) -> tuple[V, bool]:
        """The value for ``key`` and whether it was shared (True) or computed by this caller (False).

        ``hold(value)`` runs in the background after a computed value is delivered; the flight
        stays joinable until it finishes.
        """
        shared = self._flights.get(key)
        if shared is not None:
            return await asyncio.shield(shared), True
        flight: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            value = await compute()
        except BaseException as exc:
            self._land(key, flight)
            if isinstance(exc, Exception):
                flight.set_exception(exc)
                flight.exception()  # retrieved here so a failure nobody shared is not reported as unhandled
            else:
                flight.cancel()
            raise
        flight.set_result(value)
        if hold is None:
            self._land(key, flight)
        else:
            task = asyncio.create_task(self._held(key, flight, hold(value)))
            self._holds.add(task)
            task.add_done_callback(self._holds.discard)
        return value, False

    async def _held(self, key: K, flight: asyncio.Future[V], holding: Awaitable[None]) -> None:
        try:
            await holding
        finally:
            self._land(key, flight)

    def _land(self, key: K, flight: asyncio.Future[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def settle(self) -> None:
        """Wait for every held flight to land (at shutdown)."""
        if self._holds:
            await asyncio.wait(self._holds)
