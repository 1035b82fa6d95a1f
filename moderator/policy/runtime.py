"""The policy side of the service, per post and over its lifetime.

Per post: bank matching before any score (a bank rule that fires skips the model), then, after
the decision is published, shadow policies and the record kept for backtests. Over the service's
lifetime: the hot-reload watcher of the policy directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from PIL import Image
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.banks.hashing import sha256_hex
from moderator.banks.matcher import BankMatcher
from moderator.banks.schema import BankMatch
from moderator.banks.store import BankStore
from moderator.policy.engine import Verdict, bank_verdict
from moderator.policy.recording import ScoreLog, ScoreRecord, ScoreRecorder, log_key
from moderator.policy.reload import PolicyReloader, Rebuild
from moderator.policy.schema import Policy
from moderator.policy.shadow import ShadowDisagreement, ShadowMonitor
from moderator.policy.store import PolicyStore
from moderator.settings import Settings

log = logging.getLogger(__name__)


class PolicyRuntime:
    """Bank matching, shadow policies, score recording and hot reload for one service instance."""

    def __init__(self, settings: Settings, store: PolicyStore, redis: Redis | None,
                 registry: CollectorRegistry | None = None, rebuild: Rebuild | None = None) -> None:
        self.settings = settings
        self.store = store
        self.banks = BankMatcher(BankStore(redis), settings.bank_refresh_s) if redis is not None else None
        self.recorder = ScoreRecorder(ScoreLog(redis, log_key(settings.consumer_group), settings.score_log_max)) \
            if redis is not None and settings.score_log_max > 0 else None
        self.reloader = PolicyReloader(store, settings.policy_dir, rebuild)
        self.shadow = ShadowMonitor()
        self.bank_errors = 0
        # The service's registry, so /metrics exposes it; a registry of its own otherwise.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._disagreements = Counter(
            "moderator_shadow_disagreements", "Posts a shadow policy would have decided differently.",
            ["shadow", "live_action", "shadow_action"], registry=self.registry,
        )
        self._producer: AIOKafkaProducer | None = None
        self._stop_watch = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    def start(self, producer: AIOKafkaProducer | None) -> None:
        """Start watching the policy directory; ``producer`` publishes shadow disagreements."""
        self._producer = producer
        if self.settings.policy_watch and self._watch is None:
            self._watch = asyncio.create_task(self.reloader.watch(self._stop_watch), name="policy-watch")

    async def close(self) -> None:
        """Stop the watcher and flush pending records."""
        self._stop_watch.set()
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._watch, 5.0)
        if self.recorder is not None:
            await self.recorder.close()

    async def bank_check(self, image_bytes: bytes | None, metadata: Mapping[str, Any], policy: Policy,
                         decode: Callable[[bytes], Image.Image]) -> tuple[list[BankMatch], Verdict | None]:
        """The post's bank matches, and the verdict when a bank rule already decides it (else None).

        ``decode`` turns image bytes into a bounded RGB image (the ingest decoder), used only for
        perceptual banks. When Redis fails, the post is decided without banks.
        """
        limits = policy.bank_limits
        if self.banks is None or image_bytes is None or not limits:
            return [], None
        try:
            matches = await self.banks.match(image_bytes, sha256_hex(image_bytes), limits, decode)
        except RedisError as exc:
            self.bank_errors += 1
            log.warning("hash bank lookup failed, deciding without banks: %s", exc)
            return [], None
        return matches, bank_verdict(policy, metadata, matches)

    async def observe(self, post_id: str, policy: Policy, verdict: Verdict, scores: Mapping[str, float],
                      metadata: Mapping[str, Any], matches: Sequence[BankMatch], model_version: str) -> None:
        """After a decision: compare shadow policies and record the inputs for backtests."""
        shadows = self.store.shadows_of(policy)
        if shadows:
            for disagreement in self.shadow.compare(shadows, policy, verdict, post_id, scores, metadata, matches):
                await self._publish(disagreement)
        if self.recorder is not None:
            self.recorder.record(ScoreRecord(
                post_id=post_id, scores=dict(scores), metadata=dict(metadata), matches=list(matches),
                policy=policy.name, version=policy.version, action=verdict.action, reasons=verdict.reasons,
                model_version=model_version, decided_at=datetime.now(UTC),
            ))

    async def _publish(self, disagreement: ShadowDisagreement) -> None:
        self._disagreements.labels(disagreement.shadow.name, disagreement.live.action.value,
                                   disagreement.shadow.action.value).inc()
        if not self.settings.shadow_topic or self._producer is None:
            return
        try:  # fire and forget: a lost disagreement costs a count, never a decision
            await self._producer.send(self.settings.shadow_topic, disagreement.model_dump_json().encode(),
                                      disagreement.post_id.encode())
        except KafkaError as exc:
            log.warning("publishing a shadow disagreement failed: %s", exc)
