"""Recorded decisions for backtests: each decision's scores and metadata in a capped Redis stream.

Stream ids are millisecond timestamps, so ``--since`` is a range read. The stream is per consumer
group (one deployment), capped at ``score_log_max`` entries (approximate trimming, cheap in Redis).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.keys import SCORE_LOG
from moderator.policy.recording import ScoreRecord

log = logging.getLogger(__name__)


def log_key(consumer_group: str) -> str:
    """The Redis stream of one deployment's recorded decisions."""
    return SCORE_LOG.key(consumer_group)


# Each record its own entry, as one XADD per record would make it, but one command and one reply
# per batch: the client's Python packing and reply parsing per command cost more than Redis's XADD.
_APPEND = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[i])
end
return #ARGV - 1
"""


class ScoreLog:
    """Append to and read from the recorded-decisions stream."""

    def __init__(self, redis: Redis, key: str, max_len: int) -> None:
        self.redis = redis
        self.key = key
        self.max_len = max_len
        self._append = redis.register_script(_APPEND)

    async def append(self, records: Sequence[ScoreRecord]) -> None:
        """Add records in one round trip (one script call)."""
        if not records:
            return
        await self._append(keys=[self.key], args=[self.max_len, *(record.model_dump_json() for record in records)])

    async def read(self, since: datetime | None = None, until: datetime | None = None,
                   page: int = 1000) -> AsyncIterator[ScoreRecord]:
        """Records decided in ``[since, until]``, oldest first."""
        start = f"{int(since.timestamp() * 1000)}-0" if since is not None else "-"
        end = f"{int(until.timestamp() * 1000)}" if until is not None else "+"
        while True:
            entries = await self.redis.xrange(self.key, min=start, max=end, count=page)
            for _, fields in entries:
                yield ScoreRecord.model_validate_json(fields[b"r"])
            if len(entries) < page:
                return
            start = f"({entries[-1][0].decode()}"


def read_jsonl(path: Path) -> Iterator[ScoreRecord]:
    """Records from a JSON-lines file (an export of the stream, or any other sink)."""
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield ScoreRecord.model_validate(orjson.loads(line))


class ScoreRecorder:
    """Writes records in the background, batched: a post never waits for (or fails with) its record.

    A Redis outage or a full buffer loses records (counted in ``errors`` / ``dropped``), never a decision.
    """

    def __init__(self, score_log: ScoreLog, max_pending: int = 10_000, max_batch: int = 256) -> None:
        self.score_log = score_log
        self.max_batch = max_batch
        self.written = 0
        self.errors = 0
        self.dropped = 0
        self._queue: asyncio.Queue[ScoreRecord | None] = asyncio.Queue(max_pending)
        self._writer: asyncio.Task[None] | None = None

    def record(self, record: ScoreRecord) -> None:
        """Queue one record for the next write."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="score-recorder")
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first] if first is not None else []
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    first = None
                    break
                batch.append(item)
            await self._write(batch)
            if first is None:
                return

    async def _write(self, batch: Sequence[ScoreRecord]) -> None:
        try:
            await self.score_log.append(batch)
            self.written += len(batch)
        except RedisError as exc:
            self.errors += 1
            log.warning("recording %d decisions for backtests failed: %s", len(batch), exc)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout_s``), then stop."""
        if self._writer is None:
            return
        try:
            await asyncio.wait_for(self._queue.put(None), timeout_s)
            await asyncio.wait_for(asyncio.shield(self._writer), timeout_s)
        except TimeoutError:
            log.warning("dropping %d unwritten decision records at shutdown", self._queue.qsize())
            self._writer.cancel()
