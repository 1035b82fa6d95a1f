"""A third batch of hand-written phrasings, added after the second batch's test results were known.

Written the same way as ``phrases.py`` and ``phrases_more.py`` (independently of the policy prompts,
varied registers), in four parts by different writers: about 45 more harmful phrasings per category
(65 for spam and scams, the widest category) and about 28 more benign look-alikes per group, plus
everyday posts. Split on their own (``generate._splits`` over each group's third batch) and built
after every earlier post, so nothing of the first two batches moves. A phrasing that repeats an
earlier one (same words, case and spacing aside) is left out, so no phrasing can straddle splits.
"""

from __future__ import annotations

from tools.evaldata.phrases import BENIGN, HARMFUL
from tools.evaldata.phrases_more import BENIGN_MORE, HARMFUL_MORE
from tools.evaldata.third import part_a, part_b, part_c, part_d

_PARTS = (part_a, part_b, part_c, part_d)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _merged(name: str, earlier: list[str]) -> dict[str, list[str]]:
    seen = {_norm(t) for t in earlier}
    merged: dict[str, list[str]] = {}
    for part in _PARTS:
        for group, texts in getattr(part, name).items():
            for text in texts:
                if _norm(text) not in seen:
                    seen.add(_norm(text))
                    merged.setdefault(group, []).append(text)
    return merged


_EARLIER = [t for _, texts in HARMFUL.values() for t in texts] + [t for ts in HARMFUL_MORE.values() for t in ts]
_EARLIER += [t for ts in BENIGN.values() for t in ts] + [t for ts in BENIGN_MORE.values() for t in ts]
# category -> phrasings; they carry the labels of the category's group in ``phrases.HARMFUL``.
HARMFUL_THIRD: dict[str, list[str]] = _merged("HARMFUL_THIRD", _EARLIER)
# look-alike group (as in ``phrases.BENIGN``) -> phrasings, all benign.
BENIGN_THIRD: dict[str, list[str]] = _merged("BENIGN_THIRD", _EARLIER + [t for ts in HARMFUL_THIRD.values() for t in ts])
