"""Undo the spelling tricks that hide words from a word-piece text encoder.

``k1ll`` and ``k i l l`` reach MiniLM as rare word pieces and lose their meaning. Before
embedding, the offline stack rewrites, identically in the service and in training:

* letters spaced or dotted apart with one repeated separator (``k i l l``, ``k.i.l.l``,
  ``k-i-l-l``): joined when the run spells a known word or is five letters or longer (``u r a
  joke`` stays), and a run of joined words is re-spaced later by ``Resegmenter``;
* leetspeak (``f0ll0w3rs``, ``ca$h``, ``fr33``): a whole token whose mapped form is a known
  word is mapped; otherwise, in a token without two digits in a row, each stand-in that sits alone
  between two letters. Amounts, units and model names (``$5000``, ``10k``, ``m30s``, ``ps5``),
  also when OCR glued them to words (``earn$5000aweek``), keep their digits;
* letters repeated three times or more (``looooser``): two, or one when only that is a word.

Unicode look-alikes and invisible characters are already folded by ``normalize_text`` on the way
in. Text without such tricks comes back lowercased and otherwise unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Collection

_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t"})
_LEET_CHARS = "4@31!057$"
# One character, then the same separator and one character at least twice more: "k i l l", "k.i.l.l".
_SPREAD = re.compile(r"(?<![^\s(\"'])([a-z0-9@$])([ .\-_*])(?:[a-z0-9@$]\2)+[a-z0-9@$](?![^\s)\"',.!?:;])")
_TOKEN = re.compile(r"[a-z0-9@$!]+")
# One stand-in between two letters ("k1ll"): mapped unless the token holds two digits in a row.
_INTERIOR_LEET = re.compile(rf"(?<=[a-z])[{re.escape(_LEET_CHARS)}](?=[a-z])")
_DIGIT_RUN = re.compile(r"[0-9]{2}")
_REPEATS = re.compile(r"([a-z])\1{2,}")


class Deobfuscator:
    """Rewrites disguised words (see module docstring); ``words``: the encoder's known words."""

    def __init__(self, words: Collection[str]) -> None:
        self._words = frozenset(words)

    def _join_spread(self, match: re.Match[str]) -> str:
        joined = match.group(0).replace(match.group(2), "")
        plain = joined.translate(_LEET)
        # Short runs are often text speak ("u r a joke") or numbers: joined only when they spell a word.
        return joined if plain in self._words or (len(plain) >= 5 and sum(c.isalpha() for c in plain) >= 2) \
            else match.group(0)

    def _unleet(self, match: re.Match[str]) -> str:
        token = match.group(0)
        plain = token.translate(_LEET)
        if plain == token or (plain in self._words and sum(c.isalpha() for c in token) >= 2):
            return plain  # nothing to map, or the whole token reads as a word ("fr33", "c0c41n3")
        if _DIGIT_RUN.search(token):
            return token  # an amount or a model name, maybe glued to words by OCR ("earn$5000aweek")
        return _INTERIOR_LEET.sub(lambda m: m.group(0).translate(_LEET), token)

    def _squeeze(self, match: re.Match[str]) -> str:
        return match.group(1) * 2

    def _unrepeat(self, token: re.Match[str]) -> str:
        word = token.group(0)
        if not _REPEATS.search(word):
            return word
        doubled = _REPEATS.sub(self._squeeze, word)
        single = _REPEATS.sub(r"\1", word)
        return single if doubled not in self._words and single in self._words else doubled

    def __call__(self, text: str) -> str:
        """``text`` lowercased with spread letters joined, leetspeak mapped and repeats squeezed."""
        lowered = text.lower()
        joined = _SPREAD.sub(self._join_spread, lowered)
        unleeted = _TOKEN.sub(self._unleet, joined)
        return _TOKEN.sub(self._unrepeat, unleeted)
