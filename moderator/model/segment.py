"""Restore the spaces that OCR drops between words ("aweekfromhome" -> "a week from home").

Text recognisers often glue the words of one rendered line together. Sentence encoders then see
rare word pieces and miss the meaning. A run of letters that is not itself a known word is split
into the word sequence with the lowest cost under a Zipf model of word frequency (the approach of
``wordninja``), with the word list taken from the text encoder's own vocabulary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_LETTER_RUN = re.compile(r"[a-z]+")
# Single letters other than "a" and "i" are almost never words; without a penalty the split
# would happily spell out rare words letter by letter.
_SINGLE_LETTER_PENALTY = 10.0


class Resegmenter:
    """Splits unknown letter runs into likely words, leaving known words untouched."""

    def __init__(self, words_by_frequency: Sequence[str]) -> None:
        """``words_by_frequency``: lowercase words, most frequent first."""
        count = len(words_by_frequency)
        log_count = math.log(max(count, 2))
        self._cost: dict[str, float] = {}
        for rank, word in enumerate(words_by_frequency):
            cost = math.log((rank + 1) * log_count)
            if len(word) == 1 and word not in {"a", "i"}:
                cost += _SINGLE_LETTER_PENALTY
            self._cost.setdefault(word, cost)
        self._max_len = max((len(w) for w in self._cost), default=1)
        # Unknown characters must still be coverable, at a price above any known word.
        self._unknown_cost = math.log((count + 1) * log_count) + _SINGLE_LETTER_PENALTY

    def split(self, run: str) -> list[str]:
        """Lowest-cost split of a lowercase letter run into words."""
        best = [0.0] + [math.inf] * len(run)
        back = [0] * (len(run) + 1)
        for end in range(1, len(run) + 1):
            for start in range(max(0, end - self._max_len), end):
                word = run[start:end]
                cost = self._cost.get(word, self._unknown_cost if end - start == 1 else math.inf)
                if best[start] + cost < best[end]:
                    best[end] = best[start] + cost
                    back[end] = start
        words: list[str] = []
        end = len(run)
        while end > 0:
            words.append(run[back[end] : end])
            end = back[end]
        return words[::-1]

    def __call__(self, text: str) -> str:
        """Lowercased ``text`` with glued words separated; whitespace collapsed."""

        def _replace(match: re.Match[str]) -> str:
            run = match.group(0)
            words = [run] if run in self._cost else self.split(run)
            # Padded with spaces so that letters glued to digits ("5000usd") separate too.
            return " " + " ".join(words) + " "

        return " ".join(_LETTER_RUN.sub(_replace, text.lower()).split())
