"""Pydantic models of human review: queue items, reviewer verdicts, audit entries, labels, decisions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moderator.decisions.schema import Decision
from moderator.ingest.schema import ImageRef, Post
from moderator.policy.schema import Action

# Allow labels: "benign" says no category applies (every category is a negative training label);
# "context" allows harmful-looking content for its context (news, art) and teaches the heads nothing.
ALLOW_LABELS = ("benign", "context")
# Block labels are the item's categories plus "other" (blocked for a reason no category covers).
OTHER_LABEL = "other"


class Role(StrEnum):
    """What an account may do: reviewers review; admins also read the audit log."""

    REVIEWER = "reviewer"
    ADMIN = "admin"


class ItemStatus(StrEnum):
    """Where an item is in its life: waiting, held by a reviewer's lease, or decided."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    DECIDED = "decided"


def item_id_for(post_id: str) -> str:
    """The item's id in URLs and Redis keys: post ids may hold any character, this is plain hex."""
    return hashlib.sha256(post_id.encode()).hexdigest()[:32]


class PostView(BaseModel):
    """The post as reviewers see it: everything but the image bytes, which are stored apart."""

    post_id: str
    user_id: str
    text: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    has_image: bool = False
    image_url: str | None = Field(None, description="The original image URL, when the post referenced one.")

    @classmethod
    def of(cls, post: Post, has_image: bool) -> PostView:
        """The view of ``post``; ``has_image`` says whether a review image was stored for it."""
        return cls(post_id=post.post_id, user_id=post.user_id, text=post.text, created_at=post.created_at,
                   metadata=post.metadata, has_image=has_image, image_url=post.image.url if post.image else None)

    def to_post(self, image_b64: str | None) -> Post:
        """The post again, carrying the stored review image inline (what labeled JSONL needs)."""
        image = ImageRef(data_b64=image_b64) if image_b64 else ImageRef(url=self.image_url) if self.image_url else None
        return Post(post_id=self.post_id, user_id=self.user_id, text=self.text, image=image,
                    created_at=self.created_at, metadata=self.metadata)


class ReviewItem(BaseModel):
    """One post waiting for a human: the post, the policy's decision that sent it here, and when."""

    item_id: str
    post: PostView
    decision: Decision
    entered_at: datetime
    severity: float = Field(description="The highest score among the rules that fired: reviewed first.")

    @property
    def policy(self) -> str:
        return self.decision.policy.name

    @property
    def categories(self) -> list[str]:
        return list(self.decision.scores)

    def labels_for(self, action: Literal["allow", "block"]) -> list[str]:
        """The reason labels a reviewer may give with ``action``."""
        return list(ALLOW_LABELS) if action == "allow" else [*self.categories, OTHER_LABEL]

    def priority(self) -> float:
        """Sort key, lowest first: severity (percent, highest first), then age (oldest first).

        Percent steps times 1e10 seconds keep both parts exact in a float (< 2**53 at ms precision).
        """
        return (100 - round(self.severity * 100)) * 1e10 + self.entered_at.timestamp()


def severity_of(decision: Decision) -> float:
    """How urgent a review item is: the highest score among the rules that fired."""
    return max((r.score for r in decision.reasons), default=0.0)


class ReviewVerdict(BaseModel):
    """A reviewer's decision on one item (the body of ``POST /api/items/{id}/decide``)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["allow", "block"]
    label: str = Field(min_length=1, max_length=64)
    note: str = Field("", max_length=2000)


class ReviewOutcome(BaseModel):
    """Who decided what on review, written into the reviewer's decision and the item."""

    reviewer: str
    action: Literal["allow", "block"]
    label: str
    note: str = ""
    previous_action: Action
    decided_at: datetime


class ReviewerDecision(Decision):
    """The Decision wire format with ``source: reviewer``, plus the review that made it."""

    review: ReviewOutcome


class AuditAction(StrEnum):
    """Every action the audit log records."""

    ENQUEUE = "enqueue"
    CLAIM = "claim"
    RELEASE = "release"
    LEASE_EXPIRED = "lease_expired"
    DECIDE = "decide"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    TOKEN_REFUSED = "token_refused"
    LOGOUT = "logout"
    TOKEN_ISSUE = "token_issue"
    TOKEN_REVOKE = "token_revoke"
    BANK_ADD = "bank_add"
    BANK_REMOVE = "bank_remove"


class AuditEntry(BaseModel):
    """One line of the audit log: who did what to which item, and the state before and after."""

    at: datetime
    actor: str
    action: AuditAction
    item_id: str | None = None
    post_id: str | None = None
    policy: str | None = None
    previous: str | None = None
    outcome: str | None = None
    detail: str = ""
    attempted: str | None = Field(None, description="The name a failed sign-in claimed (not who sent it).")

    @field_validator("at", mode="before")
    @classmethod
    def _from_epoch_ms(cls, value: object) -> object:
        # Entries written inside Redis scripts carry the server clock as epoch milliseconds.
        return datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int | float) else value


class ItemState(BaseModel):
    """An item with where it stands now (the body of ``GET /api/items/{id}``)."""

    item: ReviewItem
    status: ItemStatus
    reviewer: str | None = None
    lease_until: datetime | None = None
    outcome: ReviewOutcome | None = None
    allow_labels: list[str]
    block_labels: list[str]


class QueueStats(BaseModel):
    """One policy's queue: how many items wait and how many are claimed."""

    policy: str
    queued: int
    claimed: int


class QueueEntry(BaseModel):
    """One waiting item as the queue list shows it."""

    item_id: str
    post_id: str
    user_id: str
    text: str | None
    has_image: bool
    image_url: str | None = None
    created_at: datetime | None = None
    severity: float
    rules: list[str]
    entered_at: datetime


class UserPost(BaseModel):
    """Another post of the same user that went to review, and how it was decided."""

    item_id: str
    post_id: str
    text: str | None
    has_image: bool
    created_at: datetime | None
    entered_at: datetime
    policy_action: str = Field(description="What the policy decided: the action and the rules that fired.")
    status: ItemStatus
    outcome: str | None = Field(None, description="The reviewer's verdict, once decided.")


class DecideResult(BaseModel):
    """What ``decide`` answers: the decision, and whether the broker already acknowledged it."""

    decision: ReviewerDecision
    published: bool


class LabelRecord(BaseModel):
    """One reviewer decision as a training example: the labeled-JSONL line ``heads train`` reads."""

    post: Post
    labels: dict[str, int]
    review: ReviewOutcome
    policy: str


def training_labels(item: ReviewItem, verdict: ReviewVerdict) -> dict[str, int]:
    """Per-category 0/1 labels a verdict implies; empty when it says nothing about categories."""
    if verdict.action == "allow":
        return {c: 0 for c in item.categories} if verdict.label == "benign" else {}
    return {verdict.label: 1} if verdict.label in item.categories else {}
