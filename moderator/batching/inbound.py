"""Posts on their way to a batcher: admitted into the pipeline, not yet submitted, not yet done.

The adaptive batcher reads this instead of guessing from past arrivals: with an empty queue and
nothing on its way, no item can join before the deadline, so the batch closes at once; while posts
are on their way (being validated, looked up in the cache, prepared), it waits for them up to its
deadline. A post takes a ``Ticket`` when it enters and leaves when it reaches ``submit`` or ends
early (cache hit, shared in-flight scores, dead letter, error); leaving twice counts once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class Ticket:
    """One post's place in the count; ``leave()`` is idempotent."""

    __slots__ = ("_inbound", "_left")

    def __init__(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._left = False

    def leave(self) -> None:
        """This post is no longer on its way (it reached the batcher or ended early)."""
        if not self._left:
            self._left = True
            self._inbound._leave()


class Inbound:
    """A count of posts on their way, and a wait for it to reach zero."""

    def __init__(self) -> None:
        self.count = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @contextmanager
    def ticket(self) -> Iterator[Ticket]:
        """Count one post while the block runs; it leaves at the latest when the block ends."""
        self.count += 1
        self._drained.clear()
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            ticket.leave()

    async def drained(self) -> None:
        """Return once nothing is on its way."""
        await self._drained.wait()

    def _leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._drained.set()
