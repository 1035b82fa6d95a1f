"""The escalation tier in the service: a generative VLM's second opinion on posts a policy is unsure of.

A policy with an ``escalation:`` block sends every post whose score for an escalated category lies
in ``band`` to a vision-language model (``moderator.model.escalation.VlmEscalator``) and lets its
answer adjust the policy's action (``adjust``): unsafe raises it to ``on_unsafe``, safe lowers it
to allow only when ``on_safe: allow`` and only the escalated categories' rules fired, and no
verdict keeps it. Verdicts are cached in Redis by escalator version and content hash, so a
redelivered or reposted post gets the same decision without calling the model again.

Escalators are built lazily, once per policy and block, on the tier's own worker thread (the
classifier's thread keeps scoring meanwhile); a hot reload that changes the block or the
categories builds a new one for the next post.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from moderator.batching import MicroBatcher
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.model.base import HeadSpec, ModelInfo, ModelInput
from moderator.model.escalation import Verdict as VlmVerdict
from moderator.model.escalation import VlmEscalator, in_uncertainty_band
from moderator.model.split import score_splitting
from moderator.policy.engine import Reason, Verdict
from moderator.policy.schema import Action, Policy
from moderator.settings import Settings

log = logging.getLogger(__name__)

# A model that failed to load is tried again after this long, not on every post.
_RETRY_BUILD_S = 60.0


def escalation_spec(policy: Policy) -> HeadSpec:
    """The categories the VLM is asked about: the block's subset, else all of the policy's."""
    spec = policy.head_spec()
    assert policy.escalation is not None
    wanted = policy.escalation.categories
    if wanted is None:
        return spec
    return HeadSpec(tuple(c for c in spec.categories if c.name in wanted), spec.neutral_prompts)


def escalated_categories(policy: Policy, scores: Mapping[str, float]) -> list[str]:
    """The escalated categories whose score lies in the policy's band (empty: no escalation)."""
    if policy.escalation is None:
        return []
    wanted = set(escalation_spec(policy).names)
    low, high = policy.escalation.band
    return in_uncertainty_band({k: v for k, v in scores.items() if k in wanted}, low, high)


def _label(assessed: VlmVerdict | None) -> str:
    if assessed is None or assessed.unsafe is None:
        return "escalation: no verdict"
    if not assessed.unsafe:
        return "escalation: safe"
    return f"escalation: unsafe ({', '.join(assessed.categories)})" if assessed.categories else "escalation: unsafe"


def adjust(policy: Policy, verdict: Verdict, scores: Mapping[str, float], banded: Sequence[str],
           assessed: VlmVerdict | None) -> Verdict:
    """The policy's verdict after the VLM's answer about a post whose ``banded`` categories were escalated.

    Unsafe raises the action to ``on_unsafe`` (never lowers it). Safe lowers it to allow only with
    ``on_safe: allow`` and only when every fired rule rests on an escalated category's score (a
    bank, metadata or confident-score rule stands). No verdict (unreadable answer, model failure)
    keeps the action: garbage never loosens a decision. A reason records the answer either way.
    """
    assert policy.escalation is not None and banded
    block = policy.escalation
    action = verdict.action
    named = [c for c in (assessed.categories if assessed is not None else ()) if c in scores]
    if assessed is not None and assessed.unsafe:
        action = max(action, block.unsafe_action, key=lambda a: a.severity)
    elif (assessed is not None and assessed.unsafe is False and block.on_safe == "allow"
          and all(r.category in banded for r in verdict.reasons)):
        action = Action.ALLOW
    category = (named or sorted(banded, key=lambda c: -scores[c]))[0]
    reason = Reason(category=category, score=scores[category], threshold=block.band[0],
                    action=block.unsafe_action if assessed is not None and assessed.unsafe else action,
                    rule=f"escalation:{policy.name}", label=_label(assessed))
    return Verdict(action=action, reasons=[*verdict.reasons, reason])


class CachedVerdict(BaseModel):
    """What the verdict cache keeps of an answer (the raw text is not needed to decide again)."""

    unsafe: bool | None
    categories: list[str]


def _build_key(policy: Policy) -> str:
    """What an escalator and its answers depend on: the model, the answer length and the categories asked about.

    Band, actions and batching are read per post, so editing them needs no new escalator and keeps
    the cached verdicts.
    """
    assert policy.escalation is not None
    spec = escalation_spec(policy)
    payload = [policy.escalation.model, policy.escalation.max_new_tokens,
               [[c.name, c.description, list(c.prompts)] for c in spec.categories]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


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
                 namespace: str = "moderator:escalation") -> None:
        self.settings = settings
        self.redis = redis
        self.limits = limits
        self.namespace = namespace
        self.stats = TierStats()
        self._slots: dict[str, _Slot] = {}
        self._batchers: dict[str, MicroBatcher[tuple[VlmEscalator, ModelInput], VlmVerdict]] = {}
        self._in_flight: dict[str, asyncio.Future[VlmVerdict | None]] = {}
        # Generation is slow: its own thread, so the classifier's thread keeps scoring meanwhile.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="escalation")

    def batcher(self, policy_name: str) -> MicroBatcher[tuple[VlmEscalator, ModelInput], VlmVerdict] | None:
        """The micro-batcher of a policy's escalations (None before its first escalation)."""
        return self._batchers.get(policy_name)

    async def apply(self, policy: Policy, verdict: Verdict, scores: Mapping[str, float], post: ValidPost,
                    info: ModelInfo) -> tuple[Verdict, ModelInfo]:
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
        key = _build_key(policy)
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
        block = policy.escalation
        batcher = self._batchers.get(policy.name)
        if batcher is None:
            batcher = MicroBatcher(self._assess_batch, block.max_batch, block.max_wait_ms,
                                   adaptive_wait=self.settings.adaptive_wait)
            self._batchers[policy.name] = batcher
        batcher.max_batch, batcher.max_wait_s = block.max_batch, block.max_wait_ms / 1000.0  # live edits
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
                       post: ValidPost) -> VlmVerdict | None:
        """The cached verdict for this content, else the model's (shared by identical posts in flight)."""
        cache_key = f"{self.namespace}:{slot.version(escalator)}:{post.content_hash}"
        cached = await self._cached(cache_key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        shared = self._in_flight.get(cache_key)
        if shared is not None:
            return await asyncio.shield(shared)
        future: asyncio.Future[VlmVerdict | None] = asyncio.get_running_loop().create_future()
        self._in_flight[cache_key] = future
        assessed: VlmVerdict | None = None
        try:
            assessed = await self._assess(policy_name, escalator, post)
        finally:  # identical posts waiting on this one get its answer, or no verdict if it was cancelled
            self._in_flight.pop(cache_key, None)
            future.set_result(assessed)
        if assessed is not None:  # a failure is not an answer: the next delivery may try again
            await self._remember(cache_key, assessed)
        return assessed

    async def _assess(self, policy_name: str, escalator: VlmEscalator, post: ValidPost) -> VlmVerdict | None:
        try:
            model_input = await post.model_input(self.limits)
            verdict = await self._batchers[policy_name].submit((escalator, model_input))
        except Exception as exc:  # noqa: BLE001 - one post the VLM cannot take keeps its policy action
            log.warning("escalation failed for post %s: %r", post.post.post_id, exc)
            return None
        self.stats.assessed += 1
        return verdict

    async def _assess_batch(self, items: Sequence[tuple[VlmEscalator, ModelInput]]) -> list[VlmVerdict | Exception]:
        """One generation per escalator in the batch (normally one), split on failure, on the tier's thread."""
        loop = asyncio.get_running_loop()
        results: list[VlmVerdict | Exception] = [RuntimeError("not assessed")] * len(items)
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

    async def _cached(self, key: str) -> VlmVerdict | None:
        if self.redis is None:
            return None
        try:
            raw = await self.redis.get(key)
        except RedisError as exc:
            log.warning("escalation cache lookup failed: %s", exc)
            return None
        if raw is None:
            return None
        try:
            cached = CachedVerdict.model_validate(orjson.loads(raw))
        except ValueError as exc:  # a damaged entry is a miss, never a failed decision
            log.warning("escalation cache entry %s unreadable: %s", key, exc)
            return None
        return VlmVerdict(cached.unsafe, tuple(cached.categories), "")

    async def _remember(self, key: str, verdict: VlmVerdict) -> None:
        if self.redis is None:
            return
        value = CachedVerdict(unsafe=verdict.unsafe, categories=list(verdict.categories))
        try:
            await self.redis.set(key, value.model_dump_json(), ex=self.settings.cache_ttl_s)
        except RedisError as exc:
            log.warning("escalation cache write failed: %s", exc)
