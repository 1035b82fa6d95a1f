"""The per-post pipeline, declared in one place and read top to bottom:

    validate → bank check → score source → prepare → infer → decide → publish → observe → review hand-off

``PostHandler(record)`` is what the Kafka runner calls for each record; it never calls back into
the runner. ``PostHandler.moderate(raw)`` runs validate → ... → decide without publishing anything,
for callers outside Kafka (the HTTP API, ``moderator policy test``); ``deliver`` publishes what it
decided when the API is asked to.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import SpanKind, get_current_span
from redis.asyncio import Redis

from moderator.batching import Ticket
from moderator.cache.source import ScoreSource
from moderator.cache.store import ScoreCache, Scores
from moderator.decisions.schema import DecisionSource
from moderator.ingest.errors import IngestError
from moderator.ingest.fetch import new_fetch_client
from moderator.ingest.schema import DeadLetterReason
from moderator.ingest.validate import IngestLimits, ValidPost
from moderator.model.base import Classifier
from moderator.pipeline.banks import BankCheck
from moderator.pipeline.decide import Decide, Decided
from moderator.pipeline.escalation import EscalationTier
from moderator.pipeline.infer import Infer
from moderator.pipeline.observe import Observe
from moderator.pipeline.prepare import Prepare
from moderator.pipeline.publish import Publish
from moderator.pipeline.review import ReviewHandOff, ReviewSink
from moderator.pipeline.validate import Validate
from moderator.policy.schema import Policy
from moderator.policy.store import PolicyStore
from moderator.settings import Settings
from moderator.telemetry import tracing
from moderator.telemetry.instrument import Telemetry

log = logging.getLogger(__name__)


@dataclass
class PostHandler:
    """The stages of the data path, in order; each is a small object with one job."""

    policies: PolicyStore
    validate: Validate
    bank_check: BankCheck
    scores: ScoreSource
    prepare: Prepare
    infer: Infer
    decide: Decide
    publish: Publish
    observe: Observe
    review: ReviewHandOff
    telemetry: Telemetry
    consumer_group: str = ""

    @classmethod
    def build(cls, settings: Settings, classifier: Classifier, policies: PolicyStore, redis: Redis | None,
              review: ReviewSink | None, telemetry: Telemetry, score_cache: bool = True,
              escalation: bool = True) -> PostHandler:
        """The service's pipeline: every stage wired from settings, Redis (optional) and the classifier.

        ``score_cache=False`` scores without the Redis score cache (in-flight sharing stays);
        ``escalation=False`` decides without the escalation tier.
        """
        limits = IngestLimits.from_settings(settings)
        cache = ScoreCache(redis, settings.cache_ttl_s) if redis is not None and score_cache else None
        return cls(
            policies=policies,
            validate=Validate(limits, new_fetch_client(limits.fetch), telemetry),
            bank_check=BankCheck.from_redis(redis, settings.bank_refresh_s, limits, telemetry),
            scores=ScoreSource(cache, telemetry),
            prepare=Prepare(limits, telemetry, settings.prepare_workers),
            infer=Infer(classifier, settings.batching, telemetry),
            # Policies with an `escalation:` block ask a generative VLM about posts in their uncertainty band.
            decide=Decide(EscalationTier(settings, redis, limits) if escalation else None, telemetry),
            publish=Publish(settings.output_topic, telemetry),
            observe=Observe(settings, policies, redis, telemetry),
            review=ReviewHandOff(review),
            telemetry=telemetry,
            consumer_group=settings.consumer_group,
        )

    async def __call__(self, record: ConsumerRecord) -> None:
        """One record, start to end: a published decision (and its hand-offs) or a dead letter."""
        # The post's trace continues here (a fresh one when it has no traceparent header).
        with self.telemetry.tracer.start_as_current_span(
            f"consume {record.topic}", context=tracing.context_from_headers(record.headers), kind=SpanKind.CONSUMER,
            attributes=tracing.consume_attributes(record, self.consumer_group) if self.telemetry.recording else None,
        ):
            try:
                decided = await self.moderate(record.value)
            except IngestError as error:
                await self.publish.dead_letter(record, error)
                return
            except Exception as exc:  # a bug on one record must not stall its partition: dead-letter it, loudly
                log.exception("unexpected error on %s:%s:%s", record.topic, record.partition, record.offset)
                await self.publish.dead_letter(record, IngestError(DeadLetterReason.INTERNAL_ERROR, repr(exc)))
                return
            await self.deliver(decided, record)

    async def deliver(self, decided: Decided, record: ConsumerRecord | None = None) -> None:
        """publish → observe → review hand-off, for a consumed ``record`` or a post from the HTTP API (None)."""
        decision = decided.decision
        await self.publish(decision, record)
        await self.observe(decided)
        if self.telemetry.recording:
            get_current_span().set_attributes({
                "moderator.post_id": decision.post_id, "moderator.action": decision.action.value,
                "moderator.decision.source": decision.source.value,
                "moderator.cache.hit": decision.source is DecisionSource.CACHE,
            })
        await self.review(decided.post, decision)

    async def moderate(self, raw: bytes | None, policy: Policy | None = None, scores: Scores | None = None) -> Decided:
        """validate → bank check → score source → prepare → infer → decide, publishing nothing.

        ``policy`` replaces the store's choice for the post; ``scores`` given are used instead of
        the cache and the model (a dry run). Raises ``IngestError`` with the dead-letter reason.
        """
        started = time.monotonic()
        # Counted on its way to the model batcher until it gets there or ends early (bank, cache, error).
        with self.infer.inbound.ticket() as ticket:
            post = await self.validate(raw)
            policy = policy if policy is not None else self.policies.select(post.metadata)
            bank = await self.bank_check(post, policy)
            if bank.verdict is not None:
                scores, source = {}, DecisionSource.BANK
            elif scores is None:
                scores, source = await self._scores(post, ticket)
            else:
                source = DecisionSource.MODEL
        return await self.decide(post, policy, bank, scores, source, self.infer.classifier.info, started)

    async def _scores(self, post: ValidPost, ticket: Ticket) -> tuple[Scores, DecisionSource]:
        # Read before scoring: a classifier swapped in meanwhile (policy reload) must not get these scores.
        model_version = self.infer.classifier.info.version

        async def model_scores() -> Scores:
            return await self.infer(await self.prepare(post, self.infer.classifier), ticket)

        scored = await self.scores.get(post.content_hash, model_version, model_scores, on_shared=ticket.leave)
        return scored.scores, DecisionSource.MODEL if scored.computed else DecisionSource.CACHE

    async def start(self) -> None:
        """Load what the first posts would otherwise wait for (the hash banks the policies use)."""
        await self.bank_check.load(self.policies.policies.values())

    async def close(self) -> None:
        """Stop every stage's workers (after the runner drained): model first, then pending cache writes."""
        await self.observe.close()
        if self.decide.escalation is not None:
            await self.decide.escalation.close()
        await self.infer.close()
        await self.prepare.close()
        await self.scores.close()
        if self.validate.fetch_client is not None:
            await self.validate.fetch_client.aclose()
