"""Hash banks in Redis: one hash of bank descriptions, one hash of entries per bank, a version per bank.

Every change bumps the bank's version, so matchers reload a bank only when it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis

from moderator.banks.schema import BankEntry, BankInfo, BankKind, normalise_hash
from moderator.keys import BANKS, Keyspace
from moderator.telemetry.corrupt_entries import decode_or_miss


class BankError(ValueError):
    """A bank operation that cannot be done (unknown bank, kind mismatch)."""


class BankStore:
    """Create banks and add, remove and list their entries."""

    def __init__(self, redis: Redis, namespace: str = BANKS.prefix) -> None:
        self.redis = redis
        self.namespace = namespace
        self._keys = Keyspace(namespace)

    @property
    def _infos(self) -> str:
        return self._keys.key("info")

    @property
    def _versions(self) -> str:
        return self._keys.key("versions")

    def _entries(self, name: str) -> str:
        return self._keys.key("entries", name)

    async def create(self, name: str, kind: BankKind, description: str = "") -> BankInfo:
        """Create a bank, or return the existing one when it has the same kind."""
        info = BankInfo(name=name, kind=kind, description=description, created_at=datetime.now(UTC))
        await self.redis.hsetnx(self._infos, name, info.model_dump_json())
        existing = await self.info(name)
        if existing.kind is not kind:
            raise BankError(f"bank {name!r} exists with kind {existing.kind.value}, not {kind.value}")
        return existing

    async def info(self, name: str) -> BankInfo:
        """One bank's description; BankError when there is no such bank."""
        raw = await self.redis.hget(self._infos, name)
        info = decode_or_miss(raw, BankInfo.model_validate_json, "bank_info", name) if raw is not None else None
        if info is None:
            raise BankError(f"no bank named {name!r}" if raw is None else f"bank {name!r} has an unreadable description")
        return info

    async def banks(self) -> list[BankInfo]:
        """Every bank, by name."""
        raw = await self.redis.hgetall(self._infos)
        infos = (decode_or_miss(v, BankInfo.model_validate_json, "bank_info", k.decode()) for k, v in raw.items())
        return sorted((i for i in infos if i is not None), key=lambda b: b.name)

    async def versions(self) -> dict[str, int]:
        """Each bank's change counter."""
        raw = await self.redis.hgetall(self._versions)
        versions = {k.decode(): decode_or_miss(v, int, "bank_version", k.decode()) for k, v in raw.items()}
        return {k: v for k, v in versions.items() if v is not None}

    async def add(self, name: str, hashes: Sequence[str], label: str = "", added_by: str = "") -> int:
        """Add entries to an existing bank (re-adding one replaces its label); returns how many were new."""
        await self.info(name)
        now = datetime.now(UTC)
        entries = {e.hash: e.model_dump_json()
                   for e in (BankEntry(hash=h, label=label, added_at=now, added_by=added_by) for h in hashes)}
        if not entries:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._entries(name), mapping=entries)
            pipe.hincrby(self._versions, name, 1)
            added, _ = await pipe.execute()
        return int(added)

    async def remove(self, name: str, hashes: Sequence[str]) -> int:
        """Remove entries; returns how many were there."""
        await self.info(name)
        if not hashes:
            return 0
        normalised = [normalise_hash(h) for h in hashes]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._entries(name), *normalised)
            pipe.hincrby(self._versions, name, 1)
            removed, _ = await pipe.execute()
        return int(removed)

    async def entries(self, name: str) -> list[BankEntry]:
        """Every readable entry of a bank (an unreadable one is skipped, counted and logged)."""
        raw = await self.redis.hgetall(self._entries(name))
        entries = (decode_or_miss(v, BankEntry.model_validate_json, "bank_entry", f"{name}:{k.decode(errors='replace')}")
                   for k, v in raw.items())
        return [e for e in entries if e is not None]

    async def drop(self, name: str) -> None:
        """Delete a bank and its entries."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._infos, name)
            pipe.delete(self._entries(name))
            pipe.hincrby(self._versions, name, 1)
            await pipe.execute()
