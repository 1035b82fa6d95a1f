"""Content hashing: the same text and image bytes always hash the same, whatever the disguise."""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Characters that render as nothing and are used to dodge exact-match filters.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f"), None
)
_SPACE = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """Canonical form for hashing: NFKC (folds compatibility look-alikes such as fullwidth letters),
    invisible characters removed, case-folded, whitespace collapsed."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return _SPACE.sub(" ", folded).strip()


def content_hash(text: str | None, image_bytes: bytes | None) -> str:
    """sha256 over the normalised text and the raw image bytes, length-prefixed so parts cannot collide."""
    digest = hashlib.sha256()
    norm = normalize_text(text).encode("utf-8")
    image = image_bytes or b""
    digest.update(len(norm).to_bytes(8, "big") + norm)
    digest.update(len(image).to_bytes(8, "big") + image)
    return digest.hexdigest()
