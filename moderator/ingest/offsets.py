"""Which offsets are safe to commit: only those below the oldest record still being processed."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition


class OffsetTracker:
    """Tracks records in flight per partition.

    Records of one partition finish out of order (cache hits overtake model calls), so the
    committable offset of a partition is its oldest unfinished offset, or one past the newest
    record seen when nothing is pending.
    """

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        """A record was handed to processing."""
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        """A record's outcome (decision or dead letter) has been published."""
        pending = self._pending.get(tp)
        if pending is not None:
            pending.discard(offset)

    def next_offset(self, tp: TopicPartition) -> int | None:
        """One past the newest record of ``tp`` handed to processing; None if there was none."""
        return self._next.get(tp)

    @property
    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def in_flight_for(self, tps: Iterable[TopicPartition]) -> int:
        return sum(len(self._pending.get(tp, ())) for tp in tps)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now: those that moved since the last ``mark_committed``."""
        out: dict[TopicPartition, int] = {}
        for tp, nxt in self._next.items():
            pending = self._pending.get(tp)
            offset = min(pending) if pending else nxt
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop partitions this consumer no longer owns (after a rebalance)."""
        for tp in tps:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
