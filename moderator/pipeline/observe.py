"""Observe: after a decision is published, compare shadow policies and record the inputs for backtests.

Neither ever delays or fails a decision: disagreements are counted and published fire-and-forget,
records are written in the background.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from moderator.pipeline.decide import Decided
from moderator.pipeline.recording import ScoreLog, ScoreRecorder, log_key
from moderator.policy.recording import ScoreRecord
from moderator.policy.shadow import ShadowDisagreement, ShadowMonitor
from moderator.policy.store import PolicyStore
from moderator.settings import Settings
from moderator.telemetry.instrument import Telemetry

log = logging.getLogger(__name__)


class Observe:
    """Shadow comparison (counted, optionally published to ``shadow_topic``) and score recording."""

    def __init__(self, settings: Settings, store: PolicyStore, redis: Redis | None, telemetry: Telemetry) -> None:
        self.store = store
        self.shadow_topic = settings.shadow_topic
        self.telemetry = telemetry
        self.shadow = ShadowMonitor()
        self.recorder = ScoreRecorder(ScoreLog(redis, log_key(settings.consumer_group), settings.score_log_max)) \
            if redis is not None and settings.score_log_max > 0 else None
        self.producer: AIOKafkaProducer | None = None  # connected when the service starts

    def connect(self, producer: AIOKafkaProducer) -> None:
        """Publish shadow disagreements with ``producer`` from now on."""
        self.producer = producer

    async def __call__(self, decided: Decided) -> None:
        """Compare the post's shadows and queue its record."""
        post, policy, verdict, decision = decided.post, decided.policy, decided.verdict, decided.decision
        shadows = self.store.shadows_of(policy)
        if shadows:
            for disagreement in self.shadow.compare(shadows, policy, verdict, post.post_id, decision.scores,
                                                    post.metadata, decided.matches):
                await self._publish(disagreement)
        if self.recorder is not None:
            # Built from values the pipeline already validated and typed: constructed, not validated again.
            self.recorder.record(ScoreRecord.model_construct(
                post_id=post.post_id, scores=dict(decision.scores), metadata=dict(post.metadata),
                matches=list(decided.matches), policy=policy.name, version=policy.version, action=verdict.action,
                reasons=verdict.reasons, model_version=decision.model.version, decided_at=datetime.now(UTC),
            ))

    async def close(self) -> None:
        """Flush pending records."""
        if self.recorder is not None:
            await self.recorder.close()

    async def _publish(self, disagreement: ShadowDisagreement) -> None:
        self.telemetry.metrics.shadow_disagreements.labels(
            disagreement.shadow.name, disagreement.live.action.value, disagreement.shadow.action.value).inc()
        if not self.shadow_topic or self.producer is None:
            return
        try:  # fire and forget: a lost disagreement costs a count, never a decision
            await self.producer.send(self.shadow_topic, disagreement.model_dump_json().encode(),
                                     disagreement.post_id.encode())
        except KafkaError as exc:
            log.warning("publishing a shadow disagreement failed: %s", exc)
