"""Review hand-off: posts whose action is ``review`` go to people (the Redis review queue)."""

from __future__ import annotations

from typing import Protocol

from moderator.decisions.schema import Decision
from moderator.ingest.validate import ValidPost
from moderator.policy.schema import Action


class ReviewSink(Protocol):
    """Where posts whose action is ``review`` go for a human decision."""

    async def enqueue(self, post: ValidPost, decision: Decision) -> None: ...


class ReviewHandOff:
    """The last stage: after publishing, so the platform learns "review" at once even while Redis is down.

    The post's offset waits for the queueing (retried by the sink until Redis is back), so a crash
    re-queues it.
    """

    def __init__(self, sink: ReviewSink | None) -> None:
        self.sink = sink

    async def __call__(self, post: ValidPost, decision: Decision) -> None:
        """Queue the post when its action is review (and a queue is configured)."""
        if decision.action is Action.REVIEW and self.sink is not None:
            await self.sink.enqueue(post, decision)
