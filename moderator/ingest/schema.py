"""Wire models of the posts topic and its dead-letter topic (docs/contract.md: Post, DeadLetter)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _printable(value: str) -> str:
    # Ids become Kafka and Redis keys, log fields and review-UI labels: no control, format
    # (bidi overrides that reorder what a reviewer sees) or surrogate characters.
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value):
        raise ValueError("must not contain control or format characters")
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_printable)]


class ImageRef(BaseModel):
    """An image carried inline (base64) or by URL; exactly one of the two."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"oneOf": [
        {"required": ["data_b64"], "properties": {"data_b64": {"type": "string"}}},
        {"required": ["url"], "properties": {"url": {"type": "string"}}},
    ]})

    data_b64: str | None = Field(None, description="The image file's bytes, base64 (JPEG, PNG, GIF or WebP).")
    url: str | None = Field(None, description="http(s) URL on a public address, fetched with size and time limits.")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.data_b64 is None) == (self.url is None):
            raise ValueError("image needs exactly one of data_b64 or url")
        return self


class Post(BaseModel):
    """A user upload to moderate. Unknown top-level fields are kept in ``metadata``."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False, json_schema_extra={"anyOf": [
        {"required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}},
        {"required": ["image"], "properties": {"image": {"type": "object"}}},
    ]})

    post_id: Identifier = Field(description="Unique id: the key of the post's records and of its decision.")
    user_id: Identifier = Field(description="The author (reviewers see the user's other posts).")
    text: str | None = Field(None, description="Caption or body; a post needs text, an image or both.")
    image: ImageRef | None = None
    created_at: datetime | None = Field(None, description="When the user posted (ISO 8601).")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form facts policies can test "
                                     "(surface, locale, account_age_days, trust ...).")

    @model_validator(mode="after")
    def _has_content(self) -> Post:
        if not self.text and self.image is None:
            raise ValueError("a post needs text or an image")
        extra = self.__pydantic_extra__ or {}
        for key in list(extra):
            self.metadata.setdefault(key, extra.pop(key))
        return self


class DeadLetterReason(StrEnum):
    """Why a record could not be moderated. Stable strings: consumers of the DLQ match on them."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    MESSAGE_TOO_LARGE = "message_too_large"
    TEXT_TOO_LONG = "text_too_long"
    IMAGE_DECODE = "image_decode"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_UNSUPPORTED = "image_unsupported"
    URL_BLOCKED = "url_blocked"
    URL_FETCH_FAILED = "url_fetch_failed"
    MODEL_ERROR = "model_error"
    UNDECODABLE_BATCH = "undecodable_batch"  # the Kafka client could not decode a fetched batch
    INTERNAL_ERROR = "internal_error"


class DeadLetter(BaseModel):
    """A record that could not be moderated, with the original bytes so it can be replayed."""

    reason: DeadLetterReason = Field(description="Stable machine-readable cause: match on it.")
    detail: str = Field(description="Human-readable cause, naming the field for schema errors.")
    topic: str = Field(description="Where the record was read: topic, partition and offset.")
    partition: int
    offset: int
    last_offset: int | None = Field(None, description="undecodable_batch only: the last offset of the skipped "
                                    "range that starts at offset (such a letter has no payload).")
    post_id: str | None = Field(None, description="The post's id, when it could be read.")
    payload_b64: str = Field(description="The record's original value, base64, for replay.")
    failed_at: datetime
