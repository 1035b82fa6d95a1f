"""Queues and items: list, claim, show, decide, release, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from moderator.review.models import (
    AuditEntry,
    DecideResult,
    ItemState,
    QueueEntry,
    QueueStats,
    ReviewVerdict,
    Role,
    UserPost,
)
from moderator.review.queue import ReviewConflict
from moderator.review.routes.deps import Caller, Context, ItemId, PolicyName, conflict, item_state, json_body

router = APIRouter(prefix="/api")


@router.get("/queues")
async def queues(caller: Caller, context: Context) -> list[QueueStats]:
    """Every policy's queue and its counts."""
    return await context.queue.queues()


@router.get("/queues/{policy}/items")
async def waiting(policy: PolicyName, caller: Caller, context: Context,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[QueueEntry]:
    """The waiting items of one policy, in claim order."""
    return await context.queue.waiting(policy, limit)


@router.post("/queues/{policy}/claim", response_model=ItemState, responses={204: {"description": "the queue is empty"}})
async def claim_next(policy: PolicyName, caller: Caller, context: Context) -> ItemState | Response:
    """Claim the next item of a policy's queue (204 when it is empty)."""
    try:
        item_id = await context.queue.claim_next(policy, caller.name)
    except ReviewConflict as exc:
        raise conflict(exc) from exc
    return Response(status_code=204) if item_id is None else await item_state(context, item_id)


@router.get("/items/{item_id}")
async def show(item_id: ItemId, caller: Caller, context: Context) -> ItemState:
    """One item: the post, scores, rules that fired, and its state."""
    return await item_state(context, item_id)


@router.get("/items/{item_id}/image")
async def image(item_id: ItemId, caller: Caller, context: Context) -> Response:
    """The item's image (a JPEG we re-encoded), to signed-in callers only."""
    data = await context.queue.image(item_id)
    if data is None:
        raise HTTPException(404, "no image")
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=300"})


@router.get("/items/{item_id}/user-posts")
async def user_posts(item_id: ItemId, caller: Caller, context: Context,
                     limit: Annotated[int, Query(ge=1, le=50)] = 10) -> list[UserPost]:
    """The same user's other posts sent to review, newest first, with how each was decided."""
    state = await item_state(context, item_id)
    return await context.queue.user_posts(state.item.post.user_id, limit, exclude=item_id)


@router.post("/items/{item_id}/claim")
async def claim(item_id: ItemId, caller: Caller, context: Context) -> ItemState:
    """Claim this item, or renew your lease on it."""
    try:
        await context.queue.claim(item_id, caller.name)
    except ReviewConflict as exc:
        raise conflict(exc) from exc
    return await item_state(context, item_id)


@router.post("/items/{item_id}/release")
async def release(item_id: ItemId, caller: Caller, context: Context) -> ItemState:
    """Give your claim back (admins may release anyone's)."""
    try:
        await context.queue.release(item_id, caller.name, force=caller.role is Role.ADMIN)
    except ReviewConflict as exc:
        raise conflict(exc) from exc
    return await item_state(context, item_id)


@router.post("/items/{item_id}/decide")
async def decide(item_id: ItemId, caller: Caller, context: Context,
                 verdict: Annotated[ReviewVerdict, Depends(json_body(ReviewVerdict))]) -> DecideResult:
    """Allow or block an item you hold; the decision goes to the decisions topic."""
    try:
        decision = await context.queue.decide(item_id, caller.name, verdict)
    except ReviewConflict as exc:
        raise conflict(exc) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    published = await context.outbox.publish(item_id, decision, context.publish_timeout_s)
    return DecideResult(decision=decision, published=published)


@router.get("/items/{item_id}/history")
async def history(item_id: ItemId, caller: Caller, context: Context) -> list[AuditEntry]:
    """Every action on this item, oldest first."""
    return await context.audit.history(item_id)
