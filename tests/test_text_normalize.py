"""normalize_text and content_hash: disguises a reader cannot see share a hash; visible differences
do not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderator.cache.hashing import _normalize_unicode, content_hash, normalize_text

DISGUISES = [
    ("zero-width space", "he\u200bllo world"),
    ("zero-width joiner and non-joiner", "h\u200de\u200cllo world"),
    ("word joiner, BOM, soft hyphen", "h\u2060e\ufeffl\u00adlo world"),
    ("bidi marks and embeddings", "\u200ehello\u200f \u202aworld\u202c"),
    ("bidi isolates", "\u2066hello\u2069 \u2067world\u2069"),
    ("right-to-left override of reversed text", "\u202edlrow olleh\u202c"),
    ("variation selectors", "he\ufe0fllo wor\ufe0eld"),
    ("tag characters", "hello\U000e0041\U000e007f world"),
    ("hangul filler", "hello\u3164 world"),
    ("C0 control characters", "hel\x00lo wor\x07ld"),
    ("fullwidth", "ｈｅｌｌｏ　ｗｏｒｌｄ"),
    ("mathematical bold", "𝐡𝐞𝐥𝐥𝐨 𝐰𝐨𝐫𝐥𝐝"),
    ("mathematical double-struck capitals", "ℍ𝔼𝕃𝕃𝕆 𝕎𝕆ℝ𝕃𝔻"),
    ("circled letters", "ⓗⓔⓛⓛⓞ ⓦⓞⓡⓛⓓ"),
    ("upper case", "HELLO WORLD"),
    ("Cyrillic look-alikes", "hеllо wоrld"),
    ("Cyrillic capitals", "НЕLLО WОRLD"),
    ("Greek capitals", "ΗΕLLΟ WΟRLD"),
    ("Cyrillic palochka and komi de", "heӏӏo worӏԁ"),
    ("Armenian o and h", "հello worlԁ"),
    ("small capitals", "ʜᴇʟʟᴏ ᴡᴏʀʟᴅ"),
    ("superscripts", "ʰᵉˡˡᵒ ʷᵒʳˡᵈ"),
    ("odd whitespace", "\thello\u00a0\u2003 \n world\u3000"),
    ("braille blank as a space", "hello\u2800world"),
]


@pytest.mark.parametrize(("name", "text"), DISGUISES, ids=[name for name, _ in DISGUISES])
def test_disguised_text_normalises_to_the_plain_text(name: str, text: str) -> None:
    assert normalize_text(text) == "hello world"
    assert content_hash(text, None) == content_hash("hello world", None)


@given(st.text(alphabet=st.characters(max_codepoint=127), min_size=1))
def test_ascii_shortcut_agrees_with_the_full_normalisation(text: str) -> None:
    assert normalize_text(text) == _normalize_unicode(text)


def test_look_alike_under_an_accent_is_folded_too() -> None:
    assert normalize_text("caf\u0435\u0301") == normalize_text("café")  # Cyrillic е + combining acute


def test_ligatures_and_sharp_s_fold() -> None:
    assert normalize_text("ﬁnal STRASSE") == normalize_text("final straße") == "final strasse"


VISIBLE_DIFFERENCES = [
    ("café", "cafe"),  # accents are visible: "résumé" and "resume" are different words
    ("h3llo", "hello"),  # leetspeak is visible, and folding digits would merge real numbers
    ("hello world", "helloworld"),
    ("1", "l"),
    ("привет", "privet"),  # no transliteration
    ("किताब", "कताब"),  # Devanagari vowel signs are combining marks, not decoration
    ("olleh", "hello"),  # reversed text without an override reads reversed
]


@pytest.mark.parametrize(("one", "other"), VISIBLE_DIFFERENCES)
def test_visible_differences_keep_different_hashes(one: str, other: str) -> None:
    assert normalize_text(one) != normalize_text(other)
    assert content_hash(one, None) != content_hash(other, None)


@pytest.mark.parametrize("empty", [None, "", "   ", "\u200b\u200d\ufeff", "\u202e\u202c"])
def test_empty_and_invisible_only_text_normalise_to_nothing(empty: str | None) -> None:
    assert normalize_text(empty) == ""
    assert content_hash(empty, None) == content_hash(None, None)


def test_lone_surrogates_hash_without_raising() -> None:
    assert content_hash("a\ud800b", None) != content_hash("ab", None)


def test_text_and_image_parts_cannot_collide() -> None:
    assert content_hash("ab", b"") != content_hash("a", b"b")
    assert content_hash("a", None) != content_hash(None, b"a")


def test_hash_values_are_pinned() -> None:
    # A change here changes every cache key: make it deliberately (old entries simply stop hitting).
    assert content_hash("Hello, World", None) == "8365392d42bd6d2f277e62feda8333a3799fb9f985cc6f04b68dbafdf34f17c7"
    assert content_hash(None, b"img") == "ef4453988f4417b6f097ff7d3c0b9b706059a18e22383c486f13fb0d7a6c96f2"
