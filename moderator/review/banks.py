"""Hash-bank administration for the review app: list banks, add and remove entries, audit each change.

Hashing and storage are the banks package's (`image_bank_hash`, `BankStore`), the same code the
`moderator bank` CLI and the service's matcher use, so an entry added here matches in the pipeline.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from moderator.banks.hashing import image_bank_hash
from moderator.banks.schema import BankEntry, BankInfo, BankKind, HexHash, normalise_hash
from moderator.banks.store import BankError, BankStore
from moderator.ingest.images import ImageLimits
from moderator.review.audit import AuditLog
from moderator.review.models import AuditAction


class BankView(BankInfo):
    """A bank with its entries, newest first (the body of ``GET /api/banks``)."""

    entries: list[BankEntry]


class BankEntryFields(BaseModel):
    """The fields of an upload: a new bank's kind (optional for an existing bank) and why it is banked."""

    model_config = ConfigDict(extra="forbid")

    kind: BankKind | None = None
    label: str = Field("", max_length=200)


class BankHashEntry(BankEntryFields):
    """The JSON body of ``POST /api/banks/{bank}/entries`` that banks a known hash."""

    hash: HexHash


class BankChange(BaseModel):
    """What an add or remove did: ``changed`` is false when the entry was already banked."""

    bank: str
    kind: BankKind
    hash: str
    label: str = ""
    changed: bool


class BankAdmin:
    """Bank changes on behalf of review accounts, each one written to the audit log."""

    def __init__(self, store: BankStore, audit: AuditLog, limits: ImageLimits) -> None:
        self.store = store
        self.audit = audit
        self.limits = limits

    async def banks(self) -> list[BankView]:
        """Every bank with its entries."""
        views = []
        for info in await self.store.banks():
            entries = sorted(await self.store.entries(info.name), key=lambda e: e.added_at, reverse=True)
            views.append(BankView(**info.model_dump(), entries=entries))
        return views

    async def _bank(self, name: str, kind: BankKind | None) -> BankInfo:
        """The bank to add to: created on first use when ``kind`` is given, like `moderator bank add`."""
        try:
            return await (self.store.create(name, kind) if kind is not None else self.store.info(name))
        except BankError as exc:
            raise HTTPException(409 if kind is not None else 404, str(exc)) from exc

    async def add_image(self, name: str, data: bytes, fields: BankEntryFields, actor: str) -> BankChange:
        """Bank an uploaded image under the bank's kind of hash."""
        if len(data) > self.limits.max_bytes:  # also for sha256 banks, which never decode the image
            raise HTTPException(413, f"image of {len(data)} bytes > limit {self.limits.max_bytes}")
        info = await self._bank(name, fields.kind)
        try:  # decoding and PDQ are CPU work: off the event loop
            digest = await asyncio.to_thread(image_bank_hash, data, info.kind, self.limits)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return await self._add(info, digest, fields.label, actor)

    async def add_hash(self, name: str, entry: BankHashEntry, actor: str) -> BankChange:
        """Bank a hash computed elsewhere (a PDQ or sha256 from another team's tooling)."""
        return await self._add(await self._bank(name, entry.kind), entry.hash, entry.label, actor)

    async def _add(self, info: BankInfo, digest: str, label: str, actor: str) -> BankChange:
        added = await self.store.add(info.name, [digest], label, added_by=actor) == 1
        change = BankChange(bank=info.name, kind=info.kind, hash=digest, label=label, changed=added)
        await self.audit.record(actor, AuditAction.BANK_ADD, _detail(change))
        return change

    async def remove(self, name: str, digest: str, actor: str) -> BankChange:
        """Remove an entry; 404 when the bank or the entry is not there."""
        try:
            info = await self.store.info(name)
        except BankError as exc:
            raise HTTPException(404, str(exc)) from exc
        digest = normalise_hash(digest)
        if await self.store.remove(name, [digest]) == 0:
            raise HTTPException(404, "not_banked")
        change = BankChange(bank=name, kind=info.kind, hash=digest, changed=True)
        await self.audit.record(actor, AuditAction.BANK_REMOVE, _detail(change))
        return change


def _detail(change: BankChange) -> str:
    """The audit line of a change: bank, kind, hash and label (and whether the entry was there already)."""
    detail = f"{change.bank} ({change.kind.value}) {change.hash}"
    if change.label:
        detail += f" label={change.label!r}"
    return detail if change.changed else f"{detail} (already banked)"
