"""Properties over arbitrary input: parsing a record never fails in an undefined way, and text
normalisation is a stable canonical form."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import ipaddress
import json
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from moderator.cache.hashing import content_hash, normalize_text
from moderator.ingest import fetch
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason, Post
from moderator.ingest.validate import IngestLimits, parse_post, validate_record
from moderator.settings import Settings

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = IngestLimits.from_settings(
    Settings(max_message_bytes=64_000, max_text_chars=500, max_image_bytes=50_000, url_fetch_timeout_s=0.5)
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


images = st.one_of(
    json_values,
    st.fixed_dictionaries({"data_b64": st.just(_png_b64()) | st.text(max_size=40)}),
    st.fixed_dictionaries(
        {"url": st.sampled_from(["http://127.0.0.1/x.png", "ftp://x/y", "http://10.0.0.1/", "", "http://[::1]/"])}
    ),
    st.fixed_dictionaries({"url": st.text(max_size=40)}),
    st.fixed_dictionaries({"data_b64": st.text(max_size=8), "url": st.text(max_size=8)}),
)
post_shaped = st.fixed_dictionaries(
    {},
    optional={
        "post_id": st.text(max_size=300) | json_values,
        "user_id": st.text(max_size=10) | json_values,
        "text": st.text(st.characters(exclude_categories=[]), max_size=600) | json_values,  # with surrogates
        "image": images,
        "created_at": st.sampled_from(["2026-11-25T10:00:00Z", "not a date", "9999-99-99", ""]) | json_values,
        "metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        "unknown": json_values,
    },
)
records = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    post_shaped.map(lambda value: json.dumps(value).encode()),
    post_shaped.map(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)


@FAST
@given(records)
def test_post_model_accepts_or_raises_validation_error_only(record: bytes) -> None:
    try:
        post = Post.model_validate_json(record)
    except ValidationError:
        return
    assert post.text or post.image is not None
    assert isinstance(post.metadata, dict)


@FAST
@given(post_shaped | json_values)
def test_post_model_from_python_values_accepts_or_raises_validation_error_only(value: object) -> None:
    with contextlib.suppress(ValidationError):
        Post.model_validate(value)


@FAST
@given(st.none() | records)
def test_parse_post_accepts_or_raises_ingest_error_only(record: bytes | None) -> None:
    try:
        post = parse_post(record, LIMITS)
    except IngestError:
        return
    assert post.text is None or len(post.text) <= 500


_POST = b'{"post_id": "p-1", "user_id": "u-1", "text": "hi", "metadata": %s}'


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (None, DeadLetterReason.INVALID_JSON),  # tombstone
        (b"\xef\xbb\xbf" + _POST % b"{}", DeadLetterReason.INVALID_JSON),  # byte-order mark
        (_POST % (b"[" * 20_000 + b"]" * 20_000), DeadLetterReason.INVALID_JSON),  # nesting bomb
        (_POST % (b"9" * 5_000), DeadLetterReason.INVALID_JSON),  # 5000-digit number
        (_POST % b"NaN", DeadLetterReason.INVALID_JSON),
        (b'{"post_id": "p", "user_id": "u", "text": "\\ud800"}', DeadLetterReason.INVALID_JSON),  # lone surrogate
        (b'{"post_id": "p", "user_id": "u", "text": "\xff"}', DeadLetterReason.INVALID_JSON),  # invalid UTF-8
        (b"[]", DeadLetterReason.SCHEMA),
        ('{"post_id": "p\u202e1", "user_id": "u", "text": "t"}'.encode(), DeadLetterReason.SCHEMA),  # bidi in id
        (b'{"post_id": "p\\n1", "user_id": "u", "text": "t"}', DeadLetterReason.SCHEMA),  # newline in id
        (b'{"post_id": "p", "user_id": "u", "text": "' + b"x" * 501 + b'"}', DeadLetterReason.TEXT_TOO_LONG),
        (_POST % (b'"' + b"x" * 70_000 + b'"'), DeadLetterReason.MESSAGE_TOO_LARGE),
    ],
    ids=[
        "tombstone", "bom", "nesting-bomb", "huge-number", "nan", "lone-surrogate", "bad-utf8", "array",
        "bidi-id", "newline-id", "long-text", "huge-message",
    ],
)  # fmt: skip
def test_hostile_records_get_a_specific_reason(record: bytes | None, reason: DeadLetterReason) -> None:
    with pytest.raises(IngestError) as caught:
        parse_post(record, LIMITS)
    assert caught.value.reason == reason


def test_duplicate_keys_take_the_last_value() -> None:
    # One parser decides for the whole service, so there is no parser differential to exploit.
    assert parse_post(b'{"post_id": "a", "post_id": "b", "user_id": "u", "text": "t"}', LIMITS).post_id == "b"


async def _fake_private_dns(host: str) -> list[fetch.IPAddress]:
    return [ipaddress.ip_address("10.0.0.1")]  # never a real lookup: every name is "private"


@FAST
@given(records)
def test_validate_record_accepts_or_raises_ingest_error_only(record: bytes) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetch, "_resolve", _fake_private_dns)
        try:
            valid = asyncio.run(validate_record(record, LIMITS))
        except IngestError:
            return
    assert len(valid.content_hash) == 64


# --- normalize_text ----------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=[]), max_size=200)  # lone surrogates included


@settings(max_examples=500, deadline=None)
@given(any_text)
def test_normalize_text_is_idempotent_and_never_raises(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip()
    assert "  " not in once
    assert not any(unicodedata.category(char) == "Cc" and not char.isspace() for char in once)
    assert len(content_hash(text, None)) == 64


plain = st.text(string.ascii_letters + string.digits + " .,!?'", max_size=60)


@FAST
@given(plain)
def test_plain_ascii_only_folds_case_and_whitespace(text: str) -> None:
    assert normalize_text(text) == " ".join(text.casefold().split())


INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f", "\u2066", "\ufe0f", "\x00"]


@FAST
@given(plain, st.data())
def test_zero_width_padding_does_not_change_the_hash(text: str, data: st.DataObject) -> None:
    padded = "".join(char + data.draw(st.sampled_from(["", *INVISIBLE])) for char in text)
    assert content_hash(padded, None) == content_hash(text, None)


LOOKALIKES = {
    "a": "аɑᴀ", "c": "сϲᴄ", "e": "еᴇ", "h": "һհʜ", "i": "іιıɪ", "j": "јϳ", "o": "оοօᴏ", "p": "рρᴘ",
    "s": "ѕꜱ", "x": "х", "y": "уүʏ", "A": "АΑ", "B": "ВΒ", "E": "ЕΕ", "H": "НΗ", "K": "КΚ", "M": "МΜ",
    "O": "ОΟ", "P": "РΡ", "T": "ТΤ", "X": "ХΧ",
}  # fmt: skip


@FAST
@given(plain, st.data())
def test_homoglyph_and_width_variants_share_the_hash(text: str, data: st.DataObject) -> None:
    def disguise(char: str) -> str:
        options = [char, unicodedata.normalize("NFKC", char)] + list(LOOKALIKES.get(char, ""))
        if char.isascii() and char.isalnum():
            options.append(chr(ord(char) + 0xFEE0))  # fullwidth form
        return data.draw(st.sampled_from(options))

    assert content_hash("".join(map(disguise, text)), None) == content_hash(text, None)
