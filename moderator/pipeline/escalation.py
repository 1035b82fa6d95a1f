"""The escalation stage: a generative VLM's second opinion on posts a policy is unsure of.

Which posts are escalated and how an answer adjusts the verdict are pure rules
(``moderator.policy.escalation``); this stage runs them. Answers are cached in Redis by escalator
version and content hash, so a redelivered or reposted post gets the same decision without
calling the model again, and identical posts in flight share one answer (``SingleFlight``).

Escalators are built lazily, once per policy and block, on the stage's own worker thread (the
classifier's thread keeps scoring meanwhile); a hot reload that changes the block or the
categories builds a new one for the next post.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.batching import BatchingConfig, MicroBatcher
from moderator.cache.singleflight import SingleFlight
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.keys import ESCALATION, Keyspace
from moderator.model.base import ModelInfo, ModelInput
from moderator.model.escalation import VlmAnswer, VlmEscalator
from moderator.model.split import score_splitting
from moderator.policy.engine import PolicyVerdict
from moderator.policy.escalation import adjust, build_key, escalated_categories, escalation_spec
from moderator.policy.schema import Policy
from moderator.settings import Settings
from moderator.telemetry.corrupt_entries import decode_or_miss

log = logging.getLogger(__name__)

# A model that failed to load is tried again after this long, not on every post.
_RETRY_BUILD_S = 60.0


class CachedAnswer(BaseModel):
    """What the verdict cache keeps of an answer (the raw text is not needed to decide again)."""

    unsafe: bool | None
    categories: list[str]


@dataclass
class _Slot:
    """One policy's escalator: what it was built from, and the build."""

    key: str
    build: asyncio.Future[VlmEscalator]
    failed_at: float | None = None

    def version(self, escalator: VlmEscalator) -> str:
        """The verdict cache's version: the model's own (weights + prompts) and what else shapes its answers."""
        return hashlib.sha256(f"{escalator.info.version}:{self.key}".encode()).hexdigest()[:24]


@dataclass
class TierStats:
    """Counters read by tests and logs."""

    escalated: int = 0
    cache_hits: int = 0
    assessed: int = 0
    builds: int = 0
    failures: int = 0


class EscalationTier:
    """Escalators per policy, their micro-batchers, and the Redis verdict cache."""

    def __init__(self, settings: Settings, redis: Redis | None, limits: IngestLimits,
                 namespace: str = ESCALATION.prefix) -> None:
        self.settings = settings
        self.redis = redis
        self.limits = limits
        self.keys = Keyspace(namespace)
        self.stats = TierStats()
        self._slots: dict[str, _Slot] = {}
        self._batchers: dict[str, MicroBatcher[tuple[VlmEscalator, ModelInput], VlmAnswer]] = {}
        self._flights: SingleFlight[str, VlmAnswer | None] = SingleFlight()
        # Generation is slow: its own thread, so the classifier's thread keeps scoring meanwhile.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="escalation")

    def batcher(self, policy_name: str) -> MicroBatcher[tuple[VlmEscalator, ModelInput], VlmAnswer] | None:
        """The micro-batcher of a policy's escalations (None before its first escalation)."""
        return self._batchers.get(policy_name)

    def batching(self, policy: Policy) -> BatchingConfig:
        """The batching block of a policy's escalation model."""
        assert policy.escalation is not None
        return BatchingConfig(max_batch=policy.escalation.max_batch, max_wait_ms=policy.escalation.max_wait_ms,
                              adaptive=self.settings.adaptive_wait)

    async def apply(self, policy: Policy, verdict: PolicyVerdict, scores: Mapping[str, float], post: ValidPost,
                    info: ModelInfo) -> tuple[PolicyVerdict, ModelInfo]:
        """The verdict and model info of a decision, after escalation when the policy asks for it."""
        banded = escalated_categories(policy, scores)
        if not banded:
            return verdict, info
        self.stats.escalated += 1
        built = await self._escalator(policy)
        assessed = await self._verdict(policy.name, *built, post) if built is not None else None
        if built is not None:
            escalator = built[1]
            components = {**info.components, "escalation_vlm": escalator.info.components["escalation_vlm"]}
            info = info.model_copy(update={"components": components})
        return adjust(policy, verdict, scores, banded, assessed), info

    async def close(self) -> None:
        """Stop the batchers and the worker thread."""
        for batcher in self._batchers.values():
            await batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----- escalators ----------------------------------------------------------------------------

    async def _escalator(self, policy: Policy) -> tuple[_Slot, VlmEscalator] | None:
        """The policy's escalator, built on first use and again when its block changed; None if it cannot load."""
        assert policy.escalation is not None
        key = build_key(policy)
        slot = self._slots.get(policy.name)
        stale = slot is not None and slot.failed_at is not None and time.monotonic() - slot.failed_at > _RETRY_BUILD_S
        if slot is None or slot.key != key or stale:
            slot = self._start_build(policy, key)
        try:
            escalator = await asyncio.shield(slot.build)
        except Exception as exc:  # noqa: BLE001 - a missing or broken model keeps the policy's actions
            if slot.failed_at is None:
                slot.failed_at = time.monotonic()
                self.stats.failures += 1
                log.error("escalation model %r of policy %s failed to load; deciding without it: %r",
                          policy.escalation.model, policy.name, exc)
            return None
        batching = self.batching(policy)
        batcher = self._batchers.get(policy.name)
        if batcher is None:
            self._batchers[policy.name] = MicroBatcher.from_config(self._assess_batch, batching)
        elif batcher.config != batching:  # a live edit of the block
            batcher.configure(batching)
        return slot, escalator

    def _start_build(self, policy: Policy, key: str) -> _Slot:
        assert policy.escalation is not None
        block, spec = policy.escalation, escalation_spec(policy)
        loop = asyncio.get_running_loop()
        build = asyncio.ensure_future(loop.run_in_executor(
            self._pool, lambda: VlmEscalator(block.model, spec, device=self.settings.device,
                                             max_new_tokens=block.max_new_tokens)))
        build.add_done_callback(lambda f: f.cancelled() or f.exception())  # failures are reported in _escalator
        slot = _Slot(key, build)
        self._slots[policy.name] = slot
        self.stats.builds += 1
        log.info("building escalation model %r for policy %s", block.model, policy.name)
        return slot

    # ----- verdicts --------------------------------------------------------------------------------

    async def _verdict(self, policy_name: str, slot: _Slot, escalator: VlmEscalator,
                       post: ValidPost) -> VlmAnswer | None:
        """The cached answer for this content, else the model's (shared by identical posts in flight)."""
        cache_key = self.keys.key(slot.version(escalator), post.content_hash)
        cached = await self._cached(cache_key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        answer, shared = await self._flights.run(cache_key, lambda: self._assess(policy_name, escalator, post))
        if answer is not None and not shared:  # a failure is not an answer: the next delivery may try again
            await self._remember(cache_key, answer)
        return answer

    async def _assess(self, policy_name: str, escalator: VlmEscalator, post: ValidPost) -> VlmAnswer | None:
        try:
            model_input = await post.model_input(self.limits)
            verdict = await self._batchers[policy_name].submit((escalator, model_input))
        except Exception as exc:  # noqa: BLE001 - one post the VLM cannot take keeps its policy action
            log.warning("escalation failed for post %s: %r", post.post.post_id, exc)
            return None
        self.stats.assessed += 1
        return verdict

    async def _assess_batch(self, items: Sequence[tuple[VlmEscalator, ModelInput]]) -> list[VlmAnswer | Exception]:
        """One generation per escalator in the batch (normally one), split on failure, on the tier's thread."""
        loop = asyncio.get_running_loop()
        results: list[VlmAnswer | Exception] = [RuntimeError("not assessed")] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (escalator, _) in enumerate(items):
            groups.setdefault(id(escalator), []).append(i)
        for indices in groups.values():
            escalator = items[indices[0]][0]
            inputs = [items[i][1] for i in indices]
            answers = await loop.run_in_executor(self._pool, score_splitting, escalator.assess, inputs)
            for i, answer in zip(indices, answers, strict=True):
                results[i] = answer
        return results

    async def _cached(self, key: str) -> VlmAnswer | None:
        if self.redis is None:
            return None
        try:
            raw = await self.redis.get(key)
        except RedisError as exc:
            log.warning("escalation cache lookup failed: %s", exc)
            return None
        if raw is None:
            return None
        cached = decode_or_miss(raw, CachedAnswer.model_validate_json, "escalation_verdict", key)
        if cached is None:  # a damaged entry is a miss, never a failed decision
            return None
        return VlmAnswer(cached.unsafe, tuple(cached.categories), "")

    async def _remember(self, key: str, verdict: VlmAnswer) -> None:
        if self.redis is None:
            return
        value = CachedAnswer(unsafe=verdict.unsafe, categories=list(verdict.categories))
        try:
            await self.redis.set(key, value.model_dump_json(), ex=self.settings.cache_ttl_s)
        except RedisError as exc:
            log.warning("escalation cache write failed: %s", exc)
