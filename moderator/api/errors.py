"""The API's error answers: OpenAI-shaped bodies for bad requests, pipeline rejections and faults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from moderator.api.schema import ErrorDetail, ErrorResponse
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason

_SERVER_FAULTS = frozenset({DeadLetterReason.MODEL_ERROR, DeadLetterReason.INTERNAL_ERROR})


class ApiError(Exception):
    """An error answer: status and OpenAI-shaped detail."""

    def __init__(self, status: int, detail: ErrorDetail) -> None:
        super().__init__(detail.message)
        self.status = status
        self.detail = detail


def ingest_error(error: IngestError, param: str) -> ApiError:
    """A post the pipeline would dead-letter: 400 (413 for size) with the reason as ``code``; 500 for faults."""
    if error.reason in _SERVER_FAULTS:
        return ApiError(500, ErrorDetail(message=f"{error.reason.value}: {error.detail}", type="server_error",
                                         code=error.reason.value))
    status = 413 if error.reason is DeadLetterReason.MESSAGE_TOO_LARGE else 400
    return ApiError(status, ErrorDetail(message=f"{error.reason.value}: {error.detail}",
                                        type="invalid_request_error", param=param, code=error.reason.value))


def _field_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """The first problems by field; never the submitted values."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    first = errors[0]["loc"] if errors else ()
    return "; ".join(parts) + more, ".".join(str(p) for p in first) or None


def invalid_body(exc: ValidationError) -> ApiError:
    """400 for a body (or query) validated by pydantic: ``invalid_json`` when it is not JSON (syntax,
    nesting depth, a lone surrogate escape), ``invalid_request`` naming the fields that do not match."""
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return ApiError(400, ErrorDetail(message=f"the body is not valid JSON: {errors[0]['msg']}",
                                         type="invalid_request_error", code="invalid_json"))
    message, param = _field_message(errors)
    return ApiError(400, ErrorDetail(message=message, type="invalid_request_error", param=param,
                                     code="invalid_request"))


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own answers (404 for an unknown path) in the same shape as every other error."""
    assert isinstance(exc, HTTPException)
    detail = ErrorDetail(message=f"{exc.detail}", type="invalid_request_error", code=f"http_{exc.status_code}")
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=exc.status_code, headers=exc.headers)
