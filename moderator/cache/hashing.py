"""Content hashing: the same text and image bytes always hash the same, whatever the disguise.

Rule for what normalisation may fold: only differences a reader cannot see. Texts that render
alike (invisible characters, fullwidth forms, Cyrillic "а" for Latin "a", right-to-left override
of reversed text) must share a hash, or one post evades a cache entry or block list by a
disguise; texts a reader can tell apart must not, or a benign variant could lend its cached
scores to a harmful one. So diacritics, digits-for-letters ("h3llo") and script transliteration
are deliberately left alone.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Unicode Default_Ignorable_Code_Point (zero-width, joiners, bidi controls, variation selectors,
# fillers, tags) plus C0/C1 controls that are not whitespace: render as nothing.
_IGNORABLE_RANGES = (
    (0x0000, 0x0008),
    (0x000E, 0x001B),
    (0x007F, 0x0084),
    (0x0086, 0x009F),
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_INVISIBLE: dict[int, None] = {cp: None for lo, hi in _IGNORABLE_RANGES for cp in range(lo, hi + 1)}

# Letters of other scripts drawn like Latin ones (a curated subset of Unicode confusables.txt:
# whole-glyph look-alikes only). Both cases: Greek "Η" looks like "H" but its lowercase "η" does not.
_LOOKALIKE_OF = {
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "І": "I", "Ј": "J", "К": "K", "М": "M", "Н": "H",
    "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "Ү": "Y", "Һ": "H",
    "Ӏ": "I", "Ԛ": "Q", "Ԝ": "W",
    "а": "a", "е": "e", "і": "i", "ј": "j", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x",
    "ѕ": "s", "ү": "y", "һ": "h", "ӏ": "l", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    "ο": "o", "ν": "v", "ι": "i", "ρ": "p", "υ": "u", "ϲ": "c", "ϳ": "j",
    # Latin letters NFKC leaves alone: small capitals ("fancy text" generators), dotless i, ...
    "ᴀ": "A", "ʙ": "B", "ᴄ": "C", "ᴅ": "D", "ᴇ": "E", "ꜰ": "F", "ɢ": "G", "ʜ": "H", "ɪ": "I",
    "ᴊ": "J", "ᴋ": "K", "ʟ": "L", "ᴍ": "M", "ɴ": "N", "ᴏ": "O", "ᴘ": "P", "ʀ": "R",
    "ꜱ": "S", "ᴛ": "T", "ᴜ": "U", "ᴠ": "V", "ᴡ": "W", "ʏ": "Y", "ᴢ": "Z",
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i",
    # Armenian
    "օ": "o", "ս": "u", "ց": "g", "հ": "h",
    # Renders as blank but is not whitespace or ignorable
    "\u2800": " ",
}  # fmt: skip
# Case-folded targets: the table is applied after case folding too, and must not undo it.
_LOOKALIKES = str.maketrans({char: latin.casefold() for char, latin in _LOOKALIKE_OF.items()})
# A right-to-left override displays the following run reversed: "\u202eolleh" reads "hello".
_RLO_RUN = re.compile("\u202e([^\u202a-\u202e\u2066-\u2069\n\r\u2029]*)")
_SPACE = re.compile(r"\s+")
# The ASCII characters the full normalisation removes (C0 controls, DEL): text that is ASCII and
# free of them is its own NFKD/NFKC form, has no look-alike or override, and folds case as lower().
_ASCII_INVISIBLE = re.compile("[" + re.escape("".join(chr(cp) for cp in _INVISIBLE if cp < 128)) + "]")


def _visual_order(text: str) -> str:
    return _RLO_RUN.sub(lambda run: run.group(1)[::-1], text)


def normalize_text(text: str | None) -> str:
    """Canonical form for hashing: right-to-left overrides undone, invisible characters removed,
    compatibility forms folded (NFKC: fullwidth, ligatures, math alphanumerics), look-alike letters
    of other scripts mapped to Latin, case-folded, whitespace collapsed. Idempotent; never raises."""
    if not text:
        return ""
    if text.isascii() and not _ASCII_INVISIBLE.search(text):  # most posts: a fifth of the full path's cost
        return _SPACE.sub(" ", text.lower()).strip()
    return _normalize_unicode(text)


def _normalize_unicode(text: str) -> str:
    """``normalize_text`` for any text: the whole chain below."""
    # Look-alikes are mapped twice: before decomposition and case folding (Greek "Η" folds to "η",
    # which no longer looks like "h"; NFKD turns lunate sigma "ϲ" into "ς") and after both (bases
    # under accents, and lowercase look-alikes that folding produced).
    visible = _visual_order(text).translate(_INVISIBLE).translate(_LOOKALIKES)
    folded = unicodedata.normalize("NFKD", visible).casefold().translate(_LOOKALIKES)
    composed = unicodedata.normalize("NFKC", folded)
    return _SPACE.sub(" ", composed).strip()


def content_hash(text: str | None, image_bytes: bytes | None) -> str:
    """sha256 over the normalised text and the raw image bytes, length-prefixed so parts cannot collide."""
    digest = hashlib.sha256()
    norm = normalize_text(text).encode("utf-8", "surrogatepass")  # lone surrogates hash, never raise
    image = image_bytes or b""
    digest.update(len(norm).to_bytes(8, "big") + norm)
    digest.update(len(image).to_bytes(8, "big") + image)
    return digest.hexdigest()
