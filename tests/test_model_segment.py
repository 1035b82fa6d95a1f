"""Re-spacing the words that OCR glues together."""

from __future__ import annotations

from moderator.model.segment import Resegmenter

WORDS = [
    "the",
    "a",
    "from",
    "to",
    "week",
    "home",
    "click",
    "here",
    "your",
    "earn",
    "prize",
    "claim",
    "link",
    "we",
    "ek",
    "awe",
]


def test_glued_words_are_split() -> None:
    split = Resegmenter(WORDS)
    assert split("$5000aweekfromhome") == "$5000 a week from home"
    assert split("ClickHereToClaimYourPrize") == "click here to claim your prize"
    assert split("earn$5000") == "earn $5000"


def test_known_words_and_spacing_are_kept() -> None:
    split = Resegmenter(WORDS)
    assert split("click  the link") == "click the link"
    assert split("") == ""


def test_unknown_runs_still_come_back_whole() -> None:
    assert Resegmenter(WORDS)("xq home").replace(" ", "") == "xqhome"
