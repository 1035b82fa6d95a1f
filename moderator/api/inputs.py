"""Turn an omni-moderation request into posts, the unit the pipeline decides.

Each post becomes the same JSON a producer would put on the posts topic, so it passes through the
stream's own validation (sizes, text length, image fetch and decoding limits) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from moderator.api.schema import ImagePart, InputType, ModerationRequest, TextPart


class InputError(ValueError):
    """A request whose shape the API cannot turn into posts; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class PostInput:
    """One post to decide: its record bytes and which input types it carries."""

    post_id: str
    value: bytes
    input_types: tuple[InputType, ...]


def _image(url: str, param: str) -> dict[str, str]:
    if url.startswith("data:"):
        header = url.partition(",")[0]
        if not header.startswith("data:image/") or not header.endswith(";base64"):
            raise InputError("a data URL must be data:image/<type>;base64,<data>", param)
        return {"data_b64": url}
    return {"url": url}


def _post(post_id: str, user_id: str, metadata: dict[str, Any], text: str | None,
          image: dict[str, str] | None) -> PostInput:
    body: dict[str, Any] = {"post_id": post_id, "user_id": user_id, "metadata": metadata}
    if text is not None:
        body["text"] = text
    if image is not None:
        body["image"] = image
    types: tuple[InputType, ...] = (("text",) if text else ()) + (("image",) if image is not None else ())
    return PostInput(post_id, record_bytes(body, "input"), types)


def record_bytes(body: dict[str, Any], param: str) -> bytes:
    """The post as record bytes; InputError for a value a record cannot carry (an integer past 64 bits)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise InputError(f"cannot be written as a post: {exc}", param) from exc


def posts_of(request: ModerationRequest, request_id: str, caller: str, max_inputs: int) -> list[PostInput]:
    """The posts of ``request``: one per string, or one for a whole array of parts.

    Raises InputError for empty inputs, too many strings, or more than one image in a request.
    """
    inputs = request.input
    metadata = request.metadata
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise InputError("input must not be empty", "input")
    if all(isinstance(item, str) for item in inputs):
        if len(inputs) > max_inputs:
            raise InputError(f"input has {len(inputs)} strings; at most {max_inputs} per request", "input")
        texts = [item for item in inputs if isinstance(item, str)]
        for index, text in enumerate(texts):
            if not text:
                raise InputError("an input string must not be empty", f"input[{index}]")
        return [_post(f"{request_id}-{index}", caller, metadata, text, None) for index, text in enumerate(texts)]
    parts = [item for item in inputs if isinstance(item, TextPart | ImagePart)]
    images = [(index, part) for index, part in enumerate(parts) if isinstance(part, ImagePart)]
    if len(images) > 1:
        raise InputError(f"{len(images)} image_url parts; a moderation input carries at most one image",
                         f"input[{images[1][0]}]")
    text = "\n".join(part.text for part in parts if isinstance(part, TextPart) and part.text) or None
    image = _image(images[0][1].image_url.url, f"input[{images[0][0]}].image_url.url") if images else None
    if text is None and image is None:
        raise InputError("the parts carry no text and no image", "input")
    return [_post(f"{request_id}-0", caller, metadata, text, image)]
