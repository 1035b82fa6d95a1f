"""The matcher of Hasher-Matcher-Actioner: a post's image against the banks its policy consults.

Banks are held in memory and re-read from Redis only when their version changed, checked at most
every ``refresh_s``; PDQ matching is a vectorised Hamming scan (fine up to around a million entries).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from redis.exceptions import RedisError

from moderator.banks.hashing import MIN_PDQ_QUALITY, hamming, hex_rows, pdq_hex
from moderator.banks.schema import BankEntry, BankKind, BankMatch
from moderator.banks.store import BankError, BankStore

log = logging.getLogger(__name__)


@functools.cache
def _note_declared_bank_missing(name: str) -> None:
    """Once per process: a bank a policy category declares (``banks: [csam]``) is normal to lack
    until an operator creates and fills it, so this is information, not a warning."""
    log.info("bank %r is declared by a policy category but not created yet; its rules match nothing until it is",
             name)


@dataclass(frozen=True)
class LoadedBank:
    """One bank's entries as loaded at ``version``."""

    name: str
    kind: BankKind
    version: int
    entries: list[BankEntry]
    rows: np.ndarray = field(repr=False)
    by_hash: dict[str, BankEntry] = field(repr=False)

    @classmethod
    def of(cls, name: str, kind: BankKind, version: int, entries: list[BankEntry]) -> LoadedBank:
        return cls(name, kind, version, entries, hex_rows([e.hash for e in entries]), {e.hash: e for e in entries})

    def match(self, sha256: str | None, pdq: str | None, max_distance: int) -> BankMatch | None:
        """The closest entry within ``max_distance`` of the image's hash for this bank's kind."""
        if self.kind is BankKind.SHA256:
            entry = self.by_hash.get(sha256) if sha256 else None
            return BankMatch(bank=self.name, kind=self.kind, hash=entry.hash, distance=0, label=entry.label) \
                if entry is not None else None
        if pdq is None or not self.entries:
            return None
        distances = hamming(self.rows, pdq)
        best = int(np.argmin(distances))
        if int(distances[best]) > max_distance:
            return None
        entry = self.entries[best]
        return BankMatch(bank=self.name, kind=self.kind, hash=entry.hash, distance=int(distances[best]),
                         label=entry.label)


class BankMatcher:
    """Matches images against banks in Redis, keeping loaded banks fresh."""

    def __init__(self, store: BankStore, refresh_s: float = 2.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.banks: dict[str, LoadedBank] = {}
        self._checked = -float("inf")
        self._refreshing: asyncio.Future[None] | None = None
        self._missing: set[str] = set()
        self._asked: set[str] = set()

    async def refresh(self, names: set[str], force: bool = False, declared: frozenset[str] = frozenset()) -> None:
        """Reload the named banks whose version changed (at most every ``refresh_s`` unless forced).

        ``declared``: banks a policy category names; their absence is expected and logged once per
        process at INFO, while a missing bank that only rules name is a warning (likely a typo).

        One refresh runs at a time. Once the names were loaded, a post never waits for a refresh under
        way (it matches against the banks loaded so far); a post that needs banks not loaded yet waits
        for it together with every other such post, all woken at once when it lands. (A lock here let
        the posts through one per event-loop turn after each wait, which capped the cache-hit path.)
        """
        while True:
            if not force and names <= self._asked and (self._refreshing is not None or self._fresh()):
                return
            if self._refreshing is None:
                break
            await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.ensure_future(self._refresh(names, declared))
        self._refreshing.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)

    def _refreshed(self, done: asyncio.Future[None]) -> None:
        if self._refreshing is done:
            self._refreshing = None

    def _fresh(self) -> bool:
        return time.monotonic() - self._checked < self.refresh_s

    async def _refresh(self, names: set[str], declared: frozenset[str]) -> None:
        try:
            await self._reload(names, declared)
        except RedisError as exc:  # keep matching against the banks already loaded; retry later
            log.warning("refreshing hash banks failed, matching against the last loaded entries: %s", exc)
        self._asked |= names
        self._checked = time.monotonic()

    async def _reload(self, names: set[str], declared: frozenset[str]) -> None:
        versions = await self.store.versions()
        for name in names:
            version = versions.get(name, 0)
            current = self.banks.get(name)
            if current is not None and current.version == version:
                continue
            try:
                info = await self.store.info(name)
            except BankError:
                if name in declared:
                    _note_declared_bank_missing(name)
                elif name not in self._missing:
                    log.warning("policy rules use bank %r, which does not exist and no category declares", name)
                self._missing.add(name)
                self.banks.pop(name, None)
                continue
            self._missing.discard(name)
            self.banks[name] = LoadedBank.of(name, info.kind, version, await self.store.entries(name))

    async def match(self, image_bytes: bytes, sha256: str, limits: Mapping[str, int],
                    decode: Callable[[bytes], Image.Image], declared: frozenset[str] = frozenset()) -> list[BankMatch]:
        """Matches of a post's image in each bank of ``limits`` (bank -> largest accepted distance).

        The image is decoded (with ``decode``, on a worker thread) only when a perceptual bank is
        consulted. ``declared``: the banks the policy's categories name (see ``refresh``).
        """
        if not limits:
            return []
        await self.refresh(set(limits), declared=declared)
        banks = [self.banks[name] for name in limits if name in self.banks]
        pdq = None
        if any(b.kind is BankKind.PDQ for b in banks):
            pdq, quality = await asyncio.to_thread(lambda: pdq_hex(decode(image_bytes)))
            if quality < MIN_PDQ_QUALITY:
                pdq = None
        return [m for b in banks if (m := b.match(sha256, pdq, limits[b.name])) is not None]
