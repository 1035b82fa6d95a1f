"""Fetch-level failures: record batches the Kafka client cannot decode, skipped as dead-lettered ranges.

aiokafka decodes a fetched batch (decompression, CRC check, record parsing) inside ``getmany``.
When a batch cannot be decoded (a codec it lacks, a corrupt batch, a CRC mismatch, a parsing bug)
``getmany`` raises, and keeps raising on every call: the partition is stuck, and a service that
exits on it restarts into the same batch forever. Worse, records the same call had already taken
from other partitions, or from good batches ahead of the bad one, are dropped with the exception
while the client's position has moved past them.

``GuardedFetcher.getmany`` turns this into a value. On such an error it

1. rewinds every assigned partition to one past the newest record the service received (or the
   committed offset), so nothing dropped with the exception is lost;
2. polls the partitions one at a time, one record per call, to find the partition and the first
   offset that cannot be decoded (the records polled on the way are returned as usual);
3. seeks past that offset one at a time until a record decodes again or the log ends: the client
   does not say where the bad batch ends, and skipping blindly could skip good records;
4. hands the skipped range to ``on_undecodable`` just before returning the records, with no
   await in between, so the service tracks the range and the records together: its offsets are
   committed only once the range's dead letter (``undecodable_batch``) is published and every
   record before it is done.

A failure that is gone on the re-fetch (a transient CRC error in transit) costs one rewind and
skips nothing. Other client errors (authorisation, a stopped consumer) are raised as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, CorruptRecordException, KafkaError, UnsupportedCodecError
from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord]]


@dataclass(frozen=True)
class UndecodableRange:
    """Offsets ``first``..``last`` (inclusive) of one partition that the client could not decode."""

    tp: TopicPartition
    first: int
    last: int
    error: str


def is_undecodable(exc: BaseException) -> bool:
    """Whether ``getmany`` raised because a fetched batch could not be decoded.

    Codec and CRC errors are named by aiokafka; anything that is not a Kafka error at all
    (``struct.error``, ``ValueError``, a codec library's own error) comes from parsing the bytes.
    """
    if isinstance(exc, CorruptRecordException | UnsupportedCodecError):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, KafkaError | ConsumerStoppedError)


class GuardedFetcher:
    """``consumer.getmany`` that skips undecodable batches instead of raising (see module docstring)."""

    def __init__(self, consumer: AIOKafkaConsumer, resume_at: Callable[[TopicPartition], int | None],
                 on_undecodable: Callable[[UndecodableRange], None], probe_timeout_ms: int = 500) -> None:
        """``resume_at(tp)``: one past the newest record of ``tp`` handed to processing, None if none yet."""
        self.consumer = consumer
        self.resume_at = resume_at
        self.on_undecodable = on_undecodable
        self.probe_timeout_ms = probe_timeout_ms

    async def getmany(self, timeout_ms: int, max_records: int) -> Records:
        """Records fetched from the assigned partitions; undecodable ranges are reported, not raised."""
        try:
            return await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:
            if not is_undecodable(exc):
                raise
            log.warning("a fetched batch could not be decoded (%r): locating it", exc)
        await self._rewind()
        records: Records = {}
        for tp in sorted(self.consumer.assignment() - self.consumer.paused()):
            found = await self._probe(tp, records, max_records)
            if found is not None:
                skipped = await self._skip(tp, found[0], found[1], records)
                log.error("partition %s:%s offsets %s..%s cannot be decoded (%s): dead-lettered and skipped",
                          tp.topic, tp.partition, skipped.first, skipped.last, skipped.error)
                self.on_undecodable(skipped)
                break  # one range per failure: another one surfaces on a later call
        return records

    async def _rewind(self) -> None:
        """Seek every assigned partition back to where the service's own records end."""
        for tp in self.consumer.assignment():
            offset = self.resume_at(tp)
            if offset is None:
                offset = await self.consumer.committed(tp)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def _poll_one(self, tp: TopicPartition, into: Records) -> bool:
        """One record of ``tp`` into ``into``; False when none arrived in the probe timeout."""
        got = await self.consumer.getmany(tp, timeout_ms=self.probe_timeout_ms, max_records=1)
        into.setdefault(tp, []).extend(got.get(tp, []))
        return bool(got.get(tp))

    async def _probe(self, tp: TopicPartition, into: Records, limit: int) -> tuple[int, str] | None:
        """The first offset of ``tp`` that fails to decode within ``limit`` records, with the error."""
        for _ in range(limit):
            try:
                if not await self._poll_one(tp, into):
                    return None
            except Exception as exc:
                if not is_undecodable(exc):
                    raise
                # Records are handed out one at a time, so the position is the failing offset.
                return await self.consumer.position(tp), repr(exc)
        return None

    async def _skip(self, tp: TopicPartition, first: int, error: str, into: Records) -> UndecodableRange:
        """Seek past ``first`` and each following offset that fails too; the range skipped.

        Never past the partition's high watermark: a client that fails on every fetch, whatever the
        offset, dead-letters what is there and is not sent past the log's end.
        """
        last = first
        while True:
            end = self.consumer.highwater(tp)
            if end is not None and last + 1 >= end:
                break
            self.consumer.seek(tp, last + 1)
            try:
                await self._poll_one(tp, into)
            except Exception as exc:
                if not is_undecodable(exc):
                    raise
                last += 1
                continue
            break
        return UndecodableRange(tp, first, last, error)
