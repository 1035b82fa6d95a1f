"""The review queue in Redis: per-policy priority queues, claims with expiring leases, decisions.

An item moves queued → claimed (a lease, renewable) → decided; a lease that runs out puts the item
back at its original priority. Every transition is one Lua script (see `scripts`), so concurrent
reviewers and app replicas never see half a change. `RedisReviewQueue.enqueue` is the service's
`ReviewSink`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.decisions.schema import Decision, DecisionSource
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.retry import with_backoff
from moderator.review import scripts
from moderator.review.images import review_jpeg
from moderator.review.keys import ReviewKeys
from moderator.review.models import (
    ItemState,
    ItemStatus,
    LabelRecord,
    PostView,
    QueueEntry,
    QueueStats,
    ReviewerDecision,
    ReviewItem,
    ReviewOutcome,
    ReviewVerdict,
    UserPost,
    item_id_for,
    severity_of,
    training_labels,
)
from moderator.settings import Settings

log = logging.getLogger(__name__)

ENQUEUE_MAX_BACKOFF_S = 2.0
LIST_TEXT_CHARS = 280  # the queue list shows a snippet; the item view has the whole text


class ReviewConflict(Exception):
    """A queue operation that the item's current state forbids; ``code`` says which state."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _describe(decision: Decision) -> str:
    """A decision in one audit-log phrase: the action and the rules that fired."""
    rules = ",".join(r.rule for r in decision.reasons)
    return f"{decision.action.value} ({rules})" if rules else decision.action.value


class RedisReviewQueue:
    """Review items and their state in Redis."""

    def __init__(self, redis: Redis, settings: Settings, keys: ReviewKeys | None = None,
                 stopping: asyncio.Event | None = None) -> None:
        self.redis = redis
        self.keys = keys or ReviewKeys()
        self.stopping = stopping
        self.lease_ms = int(settings.review_lease_s * 1000)
        self.image_limits = IngestLimits.from_settings(settings).image
        self.image_max_side = settings.review_image_max_side
        self.max_claims = settings.review_max_claims
        self.max_renewals = settings.review_max_renewals
        self._common = [self.keys.prefix, str(settings.review_audit_max), str(settings.review_item_ttl_s)]
        self._enqueue = redis.register_script(scripts.ENQUEUE)
        self._claim_next = redis.register_script(scripts.CLAIM_NEXT)
        self._claim_one = redis.register_script(scripts.CLAIM_ONE)
        self._release = redis.register_script(scripts.RELEASE)
        self._decide = redis.register_script(scripts.DECIDE)
        self._reap = redis.register_script(scripts.REAP)

    # ----- the service side ------------------------------------------------------------------

    async def enqueue(self, post: ValidPost, decision: Decision) -> None:
        """Queue a post the policy sent to review (idempotent: a redelivered post is queued once).

        While Redis is unreachable this retries, holding the post's decision back (a review nobody
        can see must not be announced); backpressure pauses consumption if many posts wait. It gives
        up only when ``stopping`` is set (at once without one): the service then leaves the record
        uncommitted, so it is redelivered rather than lost to review.
        """
        image = None
        if post.image_bytes is not None:
            image = await asyncio.to_thread(review_jpeg, post.image_bytes, self.image_limits, self.image_max_side)
        item = ReviewItem(item_id=item_id_for(post.post.post_id), post=PostView.of(post.post, image is not None),
                          decision=decision, entered_at=datetime.now(UTC), severity=severity_of(decision))
        await with_backoff(lambda: self.add(item, image), RedisError, f"review enqueue of {post.post.post_id}",
                           lambda: self.stopping is None or self.stopping.is_set(), max_delay_s=ENQUEUE_MAX_BACKOFF_S)

    async def add(self, item: ReviewItem, image_jpeg: bytes | None) -> bool:
        """Store an item and queue it; False when it already exists."""
        added = await self._enqueue(args=[*self._common, item.item_id, item.policy, repr(item.priority()),
                                          item.model_dump_json(), image_jpeg or b"", _describe(item.decision),
                                          item.post.post_id, item.post.user_id])
        return bool(added)

    # ----- reading ---------------------------------------------------------------------------

    async def queues(self) -> list[QueueStats]:
        """Every policy's queue with its counts (expired leases returned first)."""
        policies = sorted(p.decode() for p in await self.redis.smembers(self.keys.policies))
        stats = []
        for policy in policies:
            await self._reap(args=[*self._common, policy])
            queued, claimed = await asyncio.gather(self.redis.zcard(self.keys.queue(policy)),
                                                   self.redis.zcard(self.keys.leases(policy)))
            stats.append(QueueStats(policy=policy, queued=queued, claimed=claimed))
        return stats

    async def waiting(self, policy: str, limit: int = 50) -> list[QueueEntry]:
        """The first ``limit`` queued items of a policy, in the order they will be claimed."""
        await self._reap(args=[*self._common, policy])
        ids = [i.decode() for i in await self.redis.zrange(self.keys.queue(policy), 0, limit - 1)]
        entries = []
        for item_id in ids:
            raw = await self.redis.hget(self.keys.item(item_id), "data")
            if raw is None:  # expired while queued; claim_next drops it
                continue
            item = ReviewItem.model_validate_json(raw)
            text = item.post.text[:LIST_TEXT_CHARS] if item.post.text else None
            entries.append(QueueEntry(item_id=item_id, post_id=item.post.post_id, user_id=item.post.user_id, text=text,
                                      has_image=item.post.has_image, image_url=item.post.image_url,
                                      created_at=item.post.created_at,
                                      severity=item.severity, rules=[r.rule for r in item.decision.reasons],
                                      entered_at=item.entered_at))
        return entries

    async def user_posts(self, user_id: str, limit: int = 10, exclude: str | None = None) -> list[UserPost]:
        """The user's most recent posts sent to review (newest first) and how each stands."""
        posts = []
        for raw_id in await self.redis.lrange(self.keys.user_items(user_id), 0, -1):
            item_id = raw_id.decode()
            if len(posts) == limit:
                break
            if item_id == exclude:
                continue
            state = await self.get(item_id)
            if state is None:  # expired
                continue
            post = state.item.post
            posts.append(UserPost(
                item_id=item_id, post_id=post.post_id, text=post.text[:LIST_TEXT_CHARS] if post.text else None,
                has_image=post.has_image, created_at=post.created_at, entered_at=state.item.entered_at,
                policy_action=_describe(state.item.decision), status=state.status,
                outcome=f"{state.outcome.action} ({state.outcome.label}) by {state.outcome.reviewer}"
                if state.outcome else None))
        return posts

    async def get(self, item_id: str) -> ItemState | None:
        """An item and its current state, or None when unknown or expired."""
        fields = await self.redis.hmget(self.keys.item(item_id), ["data", "status", "reviewer", "lease_until", "outcome"])
        data, status, reviewer, lease_until, outcome = fields
        if data is None:
            return None
        item = ReviewItem.model_validate_json(data)
        lease_ms = int(lease_until or 0)
        return ItemState(
            item=item, status=ItemStatus(status.decode()), reviewer=(reviewer or b"").decode() or None,
            lease_until=datetime.fromtimestamp(lease_ms / 1000, UTC) if lease_ms else None,
            outcome=ReviewOutcome.model_validate_json(outcome) if outcome else None,
            allow_labels=item.labels_for("allow"), block_labels=item.labels_for("block"),
        )

    async def image(self, item_id: str) -> bytes | None:
        """The item's review JPEG."""
        return await self.redis.get(self.keys.image(item_id))

    # ----- state changes ---------------------------------------------------------------------

    async def claim_next(self, policy: str, reviewer: str) -> str | None:
        """Claim the highest-priority item of a policy; its id, or None when the queue is empty.

        ReviewConflict ``too_many_claims`` when the reviewer already holds ``review_max_claims`` items.
        """
        claimed = await self._claim_next(args=[*self._common, policy, reviewer, self.lease_ms, self.max_claims])
        if claimed == b"too_many_claims":
            raise ReviewConflict("too_many_claims")
        return claimed.decode() if claimed else None

    async def claim(self, item_id: str, reviewer: str) -> None:
        """Claim one item (or renew the caller's lease on it); ReviewConflict when it is not free.

        Also refused: a new claim beyond ``review_max_claims``, a renewal beyond ``review_max_renewals``.
        """
        result = (await self._claim_one(args=[*self._common, item_id, reviewer, self.lease_ms, self.max_claims,
                                              self.max_renewals])).decode()
        if result != "ok":
            raise ReviewConflict(result)

    async def release(self, item_id: str, actor: str, force: bool = False) -> None:
        """Put a claimed item back in its queue; only its holder may, or anyone with ``force``."""
        result = (await self._release(args=[*self._common, item_id, actor, "1" if force else "0"])).decode()
        if result != "ok":
            raise ReviewConflict(result)

    async def decide(self, item_id: str, reviewer: str, verdict: ReviewVerdict) -> ReviewerDecision:
        """Record a reviewer's verdict on an item they hold; queues its decision for publishing.

        The decision, the training label and the audit entry are written in one transaction, and
        only while the reviewer's lease is live: a verdict after the lease ran out is refused.
        """
        state = await self.get(item_id)
        if state is None:
            raise ReviewConflict("not_found")
        item = state.item
        if verdict.label not in item.labels_for(verdict.action):
            raise ValueError(f"label {verdict.label!r} is not one of {item.labels_for(verdict.action)}")
        now = datetime.now(UTC)
        outcome = ReviewOutcome(reviewer=reviewer, action=verdict.action, label=verdict.label, note=verdict.note,
                                previous_action=item.decision.action, decided_at=now)
        decision = ReviewerDecision(
            **item.decision.model_dump(exclude={"action", "source", "latency_ms", "decided_at"}),
            action=verdict.action, source=DecisionSource.REVIEWER, decided_at=now, review=outcome,
            latency_ms=round((now - item.entered_at).total_seconds() * 1000, 2),
        )
        labels = training_labels(item, verdict)
        label_json = ""
        if labels:
            image = await self.image(item_id)
            post = item.post.to_post(base64.b64encode(image).decode() if image else None)
            label_json = LabelRecord(post=post, labels=labels, review=outcome, policy=item.policy).model_dump_json(
                exclude_none=True)
        result = (await self._decide(args=[
            *self._common, item_id, reviewer, outcome.model_dump_json(), decision.model_dump_json(), label_json,
            _describe(item.decision), f"{verdict.action} ({verdict.label})", verdict.note,
        ])).decode()
        if result != "ok":
            raise ReviewConflict(result)
        return decision

    # ----- labels ----------------------------------------------------------------------------

    async def labels(self, policy: str | None = None) -> AsyncIterator[LabelRecord]:
        """Every training label reviewers produced (optionally of one policy's items)."""
        async for _, raw in self.redis.hscan_iter(self.keys.labels):
            record = LabelRecord.model_validate_json(raw)
            if policy is None or record.policy == policy:
                yield record
