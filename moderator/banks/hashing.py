"""The hasher of Hasher-Matcher-Actioner: exact (sha256 of the file) and perceptual (PDQ) image hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pdqhash
from PIL import Image

from moderator.banks.schema import BankKind
from moderator.ingest.errors import IngestError
from moderator.ingest.images import ImageLimits, decode_image

# PDQ's own confidence in a hash (0-100). Flat or tiny images hash to near-identical values, so
# below this a perceptual match means nothing (the threshold Meta's tooling uses).
MIN_PDQ_QUALITY = 50
# PDQ reduces every image to 64x64 anyway; hashing a bounded copy keeps large uploads cheap.
_PDQ_MAX_SIDE = 512
_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint16)


def sha256_hex(data: bytes) -> str:
    """The exact-bank hash of an image file: sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def pdq_hex(image: Image.Image) -> tuple[str, int]:
    """The 256-bit PDQ hash of an RGB image as 64 hex digits, and its quality (0-100)."""
    if max(image.size) > _PDQ_MAX_SIDE:
        image = image.copy()
        image.thumbnail((_PDQ_MAX_SIDE, _PDQ_MAX_SIDE), Image.Resampling.BILINEAR)
    bits, quality = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def hex_rows(hashes: list[str]) -> np.ndarray:
    """256-bit hex hashes as an ``(n, 32)`` uint8 array, for vectorised Hamming distances."""
    if not hashes:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(len(hashes), 32)


def hamming(rows: np.ndarray, query: str) -> np.ndarray:
    """Hamming distance from ``query`` to every row of ``rows``."""
    xor = np.bitwise_xor(rows, np.frombuffer(bytes.fromhex(query), dtype=np.uint8))
    return _POPCOUNT[xor].sum(axis=1)


def image_bank_hash(data: bytes, kind: BankKind, limits: ImageLimits) -> str:
    """The hash an image file is banked under: sha256 of its bytes, or the PDQ hash of its decoded pixels.

    Raises ValueError when the image cannot be decoded under ``limits`` or its PDQ quality is below
    MIN_PDQ_QUALITY (too flat to match reliably).
    """
    if kind is BankKind.SHA256:
        return sha256_hex(data)
    try:
        image = decode_image(data, limits)
    except IngestError as exc:
        raise ValueError(str(exc)) from exc
    digest, quality = pdq_hex(image)
    if quality < MIN_PDQ_QUALITY:
        raise ValueError(f"PDQ quality {quality} < {MIN_PDQ_QUALITY} (too flat to match reliably)")
    return digest
