"""Pydantic models of hash banks, their entries and the matches a post's image produced."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

BANK_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


def normalise_hash(value: str) -> str:
    """A 256-bit hash as 64 lower-case hex digits; ValueError for anything else."""
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"a bank hash is 64 hex digits (256 bits), got {value[:70]!r}")
    return value


# A bank hash field: validated and normalised by normalise_hash.
HexHash = Annotated[str, AfterValidator(normalise_hash)]


class BankKind(StrEnum):
    """How a bank's entries are compared with a post's image."""

    SHA256 = "sha256"  # exact: sha256 of the image file's bytes
    PDQ = "pdq"  # perceptual: 256-bit PDQ hash, matched within a Hamming distance


class BankInfo(BaseModel):
    """One bank: its kind and what it holds."""

    name: str = Field(pattern=BANK_NAME)
    kind: BankKind
    description: str = ""
    created_at: datetime


class BankEntry(BaseModel):
    """One known item: its hash and a label saying why it is banked."""

    hash: HexHash
    label: str = ""
    added_at: datetime
    added_by: str = Field("", description="Who banked it (a review account); empty for the CLI and older entries.")


class BankMatch(BaseModel):
    """A post's image matched a bank entry (``distance`` is 0 for exact banks)."""

    bank: str
    kind: BankKind
    hash: str
    distance: int = Field(ge=0, le=256)
    label: str = ""
