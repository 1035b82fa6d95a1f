"""Disguised spellings undone before embedding; ordinary text, amounts and model names left alone."""

from __future__ import annotations

import pytest

from moderator.model.deobfuscate import Deobfuscator

WORDS = {"kill", "die", "free", "iphone", "followers", "loser", "cash", "cocaine", "yourself", "scam"}


@pytest.mark.parametrize(("text", "expected"), [
    ("k i l l yourself", "kill yourself"),
    ("go k.i.l.l urself", "go kill urself"),
    ("k-i-l-l", "kill"),
    ("d i e", "die"),
    ("k 1 l l y o u r s e l f", "killyourself"),  # one run; the re-spacer splits it later
    ("f0ll0w3rs cheap", "followers cheap"),
    ("fr33 1ph0n3, ca$h", "free iphone, cash"),
    ("c0c41n3", "cocaine"),
    ("k1ll3r l0s3r", "killer loser"),
    ("looooser", "loser"),
    ("Sooooo good", "soo good"),
])
def test_disguises_are_undone(text: str, expected: str) -> None:
    assert Deobfuscator(WORDS)(text) == expected


@pytest.mark.parametrize("text", [
    "u r a joke", "1 2 3 go", "e.g. this", "a.k.a. the boss", "$5000 a week", "$4.5 million", "10k followers",
    "m30s in stock", "ps5 giveaway", "ak-47 for sale", "@jenna lol", "win a free iphone, click the link now",
    "earn$50o0aweekfromhome",  # OCR read a zero as "o" and glued the words: not leetspeak
])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert Deobfuscator(WORDS)(text) == text
