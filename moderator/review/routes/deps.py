"""Dependencies of the review routes: the context, the caller (401/403/429), request bodies read after auth.

A route never declares a body parameter: FastAPI would read and validate the body before any
dependency runs, so an anonymous caller could make the app parse a body (and get 422, not 401).
Bodies come in through `json_body`, which depends on the caller and so runs after authentication.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from moderator.banks.schema import BANK_NAME
from moderator.review.auth import Principal, unauthorized
from moderator.review.context import ReviewContext
from moderator.review.models import ItemState, Role
from moderator.review.queue import ReviewConflict

M = TypeVar("M", bound=BaseModel)

ItemId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
PolicyName = Annotated[str, PathParam(min_length=1, max_length=256)]
BankName = Annotated[str, PathParam(pattern=BANK_NAME, max_length=64)]
BankHash = Annotated[str, PathParam(pattern=r"^[0-9a-fA-F]{64}$")]
TokenId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]
StreamId = r"^\d+-\d+$"


def get_context(request: Request) -> ReviewContext:
    """The app's ReviewContext."""
    context: ReviewContext = request.app.state.review
    return context


Context = Annotated[ReviewContext, Depends(get_context)]


async def maybe_caller(request: Request, context: Context) -> Principal | None:
    """The caller, or None when signed out (pages show the login form then)."""
    return await context.auth.caller(request)


async def caller(principal: Annotated[Principal | None, Depends(maybe_caller)]) -> Principal:
    """The caller; 401 without valid credentials."""
    if principal is None:
        raise unauthorized()
    return principal


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    """The caller, who must be an admin (403 otherwise)."""
    if principal.role is not Role.ADMIN:
        raise HTTPException(403, "admins only")
    return principal


MaybeCaller = Annotated[Principal | None, Depends(maybe_caller)]
Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]


def json_body(model: type[M], who: Callable[..., Awaitable[Principal]] = caller) -> Callable[..., Awaitable[M]]:
    """A dependency giving the JSON body as ``model``, read only once ``who`` let the caller in."""
    # A default, not Annotated: the annotation is a string here and ``who`` a local name.
    async def parse(request: Request, principal: Principal = Depends(who)) -> M:
        try:
            return model.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from exc
    return parse


_CONFLICT_STATUS = {"not_found": 404, "too_many_claims": 429, "renewal_limit": 429}
_CONFLICT_MESSAGE = {
    "too_many_claims": "you hold as many items as one reviewer may: decide or release one first",
    "renewal_limit": "this lease was renewed as often as allowed: decide or release the item",
}


def conflict(exc: ReviewConflict) -> HTTPException:
    """The HTTP answer for a queue operation the item's state forbids."""
    return HTTPException(_CONFLICT_STATUS.get(exc.code, 409), _CONFLICT_MESSAGE.get(exc.code, exc.code))


async def item_state(context: ReviewContext, item_id: str) -> ItemState:
    """An item and its state; 404 when unknown."""
    state = await context.queue.get(item_id)
    if state is None:
        raise HTTPException(404, "not_found")
    return state
