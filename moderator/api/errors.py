"""The API's error answers: OpenAI-shaped bodies for bad requests, pipeline rejections and faults."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problems of a request body, by field; never the submitted values."""
    errors = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or '(body)'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    first = errors[0]["loc"][1:] if errors else ()
    return "; ".join(parts) + more, ".".join(str(p) for p in first) or None


async def api_error(_: Request, exc: Exception) -> JSONResponse:
    """The answer for an ``ApiError``."""
    assert isinstance(exc, ApiError)
    return JSONResponse(ErrorResponse(error=exc.detail).model_dump(), status_code=exc.status)


async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """400 (OpenAI answers 400, FastAPI would say 422) naming the fields that do not match the schema."""
    assert isinstance(exc, RequestValidationError)
    message, param = _validation_message(exc)
    detail = ErrorDetail(message=message, type="invalid_request_error", param=param, code="invalid_request")
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=400)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own answers in the same shape as every other error: 400 for a body that is not JSON
    (nesting bombs included), 404 for an unknown path, 405 for a wrong method."""
    assert isinstance(exc, HTTPException)
    code = "invalid_json" if exc.status_code == 400 else f"http_{exc.status_code}"
    detail = ErrorDetail(message=f"{exc.detail}", type="invalid_request_error", code=code)
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=exc.status_code, headers=exc.headers)
