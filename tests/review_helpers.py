"""Helpers for the review tests: accounts, review items, and the app on the real Redis and broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson
from pydantic import SecretStr

from moderator.decisions.schema import Decision, DecisionSource, PolicyRef
from moderator.ingest.validate import IngestLimits, validate_record
from moderator.model.base import ModelInfo
from moderator.policy.engine import Reason
from moderator.policy.schema import Action
from moderator.review.app import create_app
from moderator.review.auth import NewUser, issue_user_token
from moderator.review.context import ReviewContext, open_review
from moderator.review.keys import ReviewKeys
from moderator.review.models import PostView, ReviewItem, Role, item_id_for, severity_of
from moderator.settings import Settings
from moderator.testing.samples import b64, render_image

ROLES = {"alice": Role.REVIEWER, "bob": Role.REVIEWER, "root": Role.ADMIN}
TOKEN_SECRET = SecretStr("test-review-token-secret-0123456789abcdef")
CATEGORIES = ("nudity", "violence", "drugs", "scam", "hate")


def with_secret(settings: Settings, **values: object) -> Settings:
    """``settings`` with the tests' token secret (and any other review settings)."""
    return settings.model_copy(update={"review_token_secret": TOKEN_SECRET, **values})


async def issue_accounts(context: ReviewContext) -> dict[str, str]:
    """Fresh tokens for alice and bob (reviewers) and root (admin): name -> token."""
    return {name: (await issue_user_token(context.auth.tokens, NewUser(name=name, role=role))).token.get_secret_value()
            for name, role in ROLES.items()}


def isolated_keys() -> ReviewKeys:
    """Review keys no other test touches (the session's Redis is shared)."""
    return ReviewKeys(prefix=f"test-review-{uuid.uuid4().hex[:8]}:")


def review_decision(post_id: str, category: str = "scam", score: float = 0.7, policy: str = "default") -> Decision:
    """The policy's decision sending a post to review because ``category`` scored ``score``."""
    scores = {c: 0.05 for c in CATEGORIES} | {category: score}
    reason = Reason(category=category, score=score, threshold=0.55, action=Action.REVIEW, rule=f"{category}-review")
    return Decision(post_id=post_id, action=Action.REVIEW, scores=scores, reasons=[reason],
                    policy=PolicyRef(name=policy, version="1"), model=ModelInfo(name="test", version="t1"),
                    source=DecisionSource.MODEL, trace_id="4bf92f3577b34da6a3ce929d0e0e4736", latency_ms=12.0,
                    decided_at=datetime.now(UTC))


def post_json(post_id: str, text: str | None = "Earn $5000 a week from home", image: bool = True,
              overlay: str = "earn $5000 a week", user_id: str = "u-1",
              metadata: dict[str, object] | None = None) -> dict[str, object]:
    """A post as the posts topic carries it, with a generated PNG."""
    post: dict[str, object] = {"post_id": post_id, "user_id": user_id, "created_at": "2026-11-25T10:00:00Z",
                               "metadata": metadata or {}}
    if text:
        post["text"] = text
    if image:
        post["image"] = {"data_b64": b64(render_image(overlay, seed=len(post_id)))}
    return post


async def enqueue(context: ReviewContext, post_id: str, category: str = "scam", score: float = 0.7,
                  policy: str = "default", **post: object) -> str:
    """Put a post through ingest validation and into the review queue, as the service does; its item id."""
    valid = await validate_record(orjson.dumps(post_json(post_id, **post)),  # type: ignore[arg-type]
                                  IngestLimits.from_settings(context.settings))
    await context.queue.enqueue(valid, review_decision(post_id, category, score, policy))
    return item_id_for(post_id)


async def enqueue_url_post(context: ReviewContext, post_id: str, url: str, user_id: str = "u-1") -> str:
    """Queue a post whose image was referenced by URL (stored without a review image, as when its fetch failed)."""
    post = PostView(post_id=post_id, user_id=user_id, created_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
                    image_url=url)
    decision = review_decision(post_id)
    item = ReviewItem(item_id=item_id_for(post_id), post=post, decision=decision, entered_at=datetime.now(UTC),
                      severity=severity_of(decision))
    await context.queue.add(item, None)
    return item.item_id


@dataclass
class ReviewApp:
    """The review app under test: its context, an HTTP client speaking ASGI to it, the accounts' tokens."""

    context: ReviewContext
    client: httpx.AsyncClient
    tokens: dict[str, str]

    def bearer(self, name: str) -> dict[str, str]:
        """The Authorization header of one test account."""
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@asynccontextmanager
async def review_app(settings: Settings, keys: ReviewKeys | None = None,
                     base_url: str = "http://review.test", client_address: str = "127.0.0.1") -> AsyncIterator[ReviewApp]:
    """The real app on the real Redis and broker, with an in-process HTTP client (from ``client_address``)."""
    async with open_review(with_secret(settings), keys or isolated_keys()) as context:
        tokens = await issue_accounts(context)
        transport = httpx.ASGITransport(app=create_app(context), client=(client_address, 123))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield ReviewApp(context, client, tokens)
