"""Infer: prepared model inputs → scores, micro-batched onto the classifier on its own thread.

Callers submit one prepared post and await its scores; the classifier only ever sees lists (Ray
Serve's ``@serve.batch``) and, on the model thread, only stacks prepared parts and runs the
forward pass (``StagedClassifier.infer``). A failing batch is split until the failing input is found, which alone fails
(``model_error``); the model version a caller reads before submitting names the scores it gets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext

from moderator.batching import BatchingConfig, Inbound, MicroBatcher, Ticket
from moderator.cache.store import Scores
from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason
from moderator.model.base import Classifier, Prepared, staged
from moderator.model.split import score_splitting
from moderator.telemetry import tracing
from moderator.telemetry.instrument import Telemetry


class Infer:
    """The model stage: one batcher, one model thread, a classifier that a policy reload may swap."""

    def __init__(self, classifier: Classifier, batching: BatchingConfig, telemetry: Telemetry) -> None:
        self.classifier = classifier
        self.telemetry = telemetry
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # Posts on their way here (the handler counts them): the adaptive batcher waits for them only.
        self.inbound = Inbound()
        # Each item carries its post's span context, so the batch span can link to every post in it.
        self.batcher: MicroBatcher[tuple[Prepared, SpanContext], Scores] = MicroBatcher.from_config(
            self._score_batch, batching, self.inbound)

    async def __call__(self, prepared: Prepared, ticket: Ticket | None = None) -> Scores:
        """This post's scores from the next model batch; a model failure on it raises ``IngestError``.

        ``ticket``, the post's place among those on their way, leaves as the post joins the queue.
        """
        with self.telemetry.span(tracing.INFERENCE) as inference:
            if ticket is not None:
                ticket.leave()
            try:
                return await self.batcher.submit((prepared, inference.get_span_context()))
            except Exception as exc:
                raise IngestError(DeadLetterReason.MODEL_ERROR, f"model failed on this post: {exc!r}") from exc

    async def close(self) -> None:
        """Stop the batcher and the model thread."""
        await self.batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _score_batch(self, items: Sequence[tuple[Prepared, SpanContext]]) -> list[Scores | Exception]:
        """One model call for the batch, split on failure, on the model thread, traced as one span."""
        loop = asyncio.get_running_loop()
        classifier = self.classifier
        parts = [prepared for prepared, _ in items]
        # The batch's posts belong to many traces: the batch span starts its own and links to each post.
        with self.telemetry.stage(
            "model", span=tracing.MODEL_BATCH, context=Context(), links=[Link(context) for _, context in items],
            attributes={"messaging.batch.message_count": len(items), "moderator.model.name": classifier.info.name,
                        "moderator.model.version": classifier.info.version},
        ) as span:
            started = time.perf_counter()
            results = await loop.run_in_executor(self._pool, score_splitting, staged(classifier).infer, parts)
            self.telemetry.metrics.model_batch(len(items), time.perf_counter() - started)
            span.set_attribute("moderator.model.failed_items", sum(isinstance(r, Exception) for r in results))
            return results
