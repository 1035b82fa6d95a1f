"""Wire models of the HTTP API: OpenAI's omni-moderation request and response, errors, /v1/decide.

The moderation models follow OpenAI's ``POST /v1/moderations`` so the official clients work
unchanged; ``metadata`` is this service's one extension (it selects the policy, as a post's
metadata does on the stream).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

InputType = Literal["text", "image"]


class ImageURL(BaseModel):
    """Where the image is: an https URL (fetched SSRF-safely) or a ``data:image/...;base64,`` URL."""

    url: str = Field(min_length=1)


class TextPart(BaseModel):
    """A piece of text in a multi-modal input."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    """An image in a multi-modal input."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ModerationRequest(BaseModel):
    """``POST /v1/moderations``: a string, an array of strings (one result each), or an array of parts
    (one result for all of them: texts joined, at most one image, as one post)."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[Part] = Field(
        description="A string, an array of strings, or an array of text / image_url parts.")
    model: str | None = Field(None, description="Accepted for compatibility; the response names the model used.")
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="moderator extension: post metadata (surface, locale...) that "
                                                 "selects the policy and feeds its metadata rules.")


class ModerationResult(BaseModel):
    """The verdict on one input, in omni-moderation's category names."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[InputType]]


class ModerationResponse(BaseModel):
    """The body of a successful ``POST /v1/moderations``."""

    id: str
    model: str
    results: list[ModerationResult]


class ErrorDetail(BaseModel):
    """What went wrong, in OpenAI's error shape (the clients raise it as ``BadRequestError`` etc.)."""

    message: str
    type: Literal["invalid_request_error", "authentication_error", "rate_limit_error", "server_error"]
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body."""

    error: ErrorDetail
