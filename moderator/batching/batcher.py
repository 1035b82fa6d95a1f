"""An adaptive micro-batcher in the style of Ray Serve's ``@serve.batch``.

A batch closes when it holds ``max_batch`` items or ``max_wait_ms`` after its first item arrived,
whichever comes first. While one batch runs, new items queue up, so under load batches grow on
their own towards ``max_batch`` and at low load an item waits at most ``max_wait_ms``.

With ``adaptive_wait`` the batcher closes a batch early when nothing would join it before the
deadline. Given an ``Inbound`` count of posts on their way to it, it knows: with an empty queue
and nothing on its way the batch closes at once, and while posts are on their way it waits for
them (never past the deadline). Without one it guesses from the arrival rate (a moving average of
the gaps between submits): it closes as soon as the next item is not expected before the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")
R = TypeVar("R")

from moderator.batching.config import BatchingConfig
from moderator.batching.inbound import Inbound

BatchFn = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]


class BatcherClosed(RuntimeError):
    """The batcher was closed before this item's batch ran."""


class _Entry(NamedTuple, Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    arrived: float  # loop time of the submit: a batch's max_wait counts from its first item's arrival


@dataclass
class BatchStats:
    """Counters a test or metric exporter can read."""

    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        if len(self.sizes) < 10_000:
            self.sizes.append(size)


class MicroBatcher(Generic[T, R]):
    """Turn ``fn(list[T]) -> list[R | Exception]`` into ``await submit(T) -> R``.

    An exception in a result slot is raised to that item's caller only; an exception raised by
    ``fn`` itself fails every item of that batch.
    """

    def __init__(self, fn: BatchFn[T, R], max_batch: int, max_wait_ms: float, adaptive_wait: bool = False,
                 preferred_sizes: Sequence[int] = (), inbound: Inbound | None = None) -> None:
        self._fn = fn
        self.inbound = inbound
        self.configure(BatchingConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, adaptive=adaptive_wait,
                                      preferred_sizes=tuple(preferred_sizes)))
        self._last_arrival: float | None = None
        self._mean_gap_s: float | None = None
        self._queue: asyncio.Queue[_Entry[T, R]] = asyncio.Queue()
        self._carry: deque[_Entry[T, R]] = deque()  # cut off a batch by a preferred size
        self._running: list[_Entry[T, R]] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = BatchStats()

    @classmethod
    def from_config(cls, fn: BatchFn[T, R], config: BatchingConfig,
                    inbound: Inbound | None = None) -> MicroBatcher[T, R]:
        """A batcher shaped by one batching block (``inbound``: the posts on their way to it)."""
        return cls(fn, config.max_batch, config.max_wait_ms, config.adaptive, config.preferred_sizes, inbound)

    def configure(self, config: BatchingConfig) -> None:
        """Apply a (possibly edited) batching block; batches forming from now on follow it."""
        self.config = config
        self.max_batch = config.max_batch
        self.max_wait_s = config.max_wait_ms / 1000.0
        self.adaptive_wait = config.adaptive

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        now = loop.time()
        self._note_arrival(now)
        self._queue.put_nowait(_Entry(item, future, now))  # unbounded: never waits, so no coroutine per item
        return await future

    def _note_arrival(self, now: float) -> None:
        if self._last_arrival is not None:
            # An idle spell counts as a few max_waits at most, so a burst after it shows within a few items.
            gap = min(now - self._last_arrival, 4 * self.max_wait_s)
            self._mean_gap_s = gap if self._mean_gap_s is None else 0.8 * self._mean_gap_s + 0.2 * gap
        self._last_arrival = now

    def _none_expected_before(self, deadline: float) -> bool:
        """Adaptive wait: nothing is on its way (or, with no count given, the arrival rate expects nothing in time)."""
        if not self.adaptive_wait:
            return False
        if self.inbound is not None:
            return self.inbound.count == 0
        if self._last_arrival is None or self._mean_gap_s is None:
            return False  # no rate known yet (the first item): wait as a fixed batcher would
        return self._last_arrival + self._mean_gap_s > deadline

    async def _next(self, timeout: float | None = None) -> _Entry[T, R]:
        if self._carry:
            return self._carry.popleft()
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _next_or_drained(self, timeout: float) -> _Entry[T, R] | None:
        """The next item, or None once nothing is on its way any more or ``timeout`` passed."""
        assert self.inbound is not None
        get = asyncio.ensure_future(self._queue.get())
        drained = asyncio.ensure_future(self.inbound.drained())
        try:
            await asyncio.wait((get, drained), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            if not get.done():
                get.cancel()  # before it took an item: the item stays queued for the next look
        return get.result() if get.done() and not get.cancelled() else None

    async def _collect(self) -> list[_Entry[T, R]]:
        batch = [await self._next()]
        # From the first item's arrival, not from now: items that queued up while the model ran the
        # previous batch have waited already, so their batch closes as soon as the model is free.
        deadline = batch[0].arrived + self.max_wait_s
        while len(batch) < self.max_batch:
            if self._carry or not self._queue.empty():
                batch.append(await self._next())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._none_expected_before(deadline):
                break
            if self.adaptive_wait and self.inbound is not None:
                entry = await self._next_or_drained(remaining)
                if entry is not None:
                    batch.append(entry)
                continue  # re-check: an item queued, nothing on its way, or the deadline
            try:
                batch.append(await self._next(remaining))
            except TimeoutError:
                break
        return self._cut(batch)

    def _cut(self, batch: list[_Entry[T, R]]) -> list[_Entry[T, R]]:
        """Cut the batch to the largest preferred size it reaches; the rest lead the next batch."""
        fitting = [size for size in self.config.preferred_sizes if size <= len(batch)]
        if not fitting:
            return batch
        keep = max(fitting)
        self._carry.extendleft(reversed(batch[keep:]))
        return batch[:keep]

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            self._running = [entry for entry in batch if not entry.future.cancelled()]
            if self._running:
                await self._call(self._running)
            self._running = []

    async def _call(self, live: list[_Entry[T, R]]) -> None:
        self.stats.record(len(live))
        try:
            results = await self._fn([entry.item for entry in live])
            if len(results) != len(live):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
        except Exception as exc:  # noqa: BLE001 - delivered to every caller of this batch
            for entry in live:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        for (_, fut, _), result in zip(live, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def close(self) -> None:
        """Stop the worker; every waiter gets its result or ``BatcherClosed``, none is left hanging.

        Items still queued fail with ``BatcherClosed``; so do those of a batch that was running,
        since its batch function is cancelled with the worker. Later submits fail at once.
        """
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        pending = [*self._running, *self._carry]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        self._running, self._carry = [], deque()
        for _, fut, _ in pending:
            if not fut.done():
                fut.set_exception(BatcherClosed("the batcher closed before this item was scored"))
