"""Sample producer for docker-compose: publishes sample posts at a steady rate, each with a traceparent.

Every post is sent inside a producer span of its own trace, so a trace in the tracing UI starts
here, continues through the moderator's stages and ends at the decision. Kafka settings are the
service's (``MODERATOR_KAFKA_BOOTSTRAP``, ``MODERATOR_INPUT_TOPIC``); the pace comes from
``PRODUCER_RATE`` (posts per second) and ``PRODUCER_TOTAL`` (0 = forever). Each round also reposts
one earlier post under a new id, which the moderator serves from its cache.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderator.broker import ensure_topics
from moderator.client import post_record, produce
from moderator.settings import Settings
from moderator.telemetry.tracing import build_tracer_provider, publish_attributes, traceparent_of
from moderator.testing.samples import sample_posts

log = logging.getLogger("producer")


class ProducerSettings(BaseSettings):
    """How fast and how much to produce."""

    model_config = SettingsConfigDict(env_prefix="PRODUCER_")

    rate: float = Field(2.0, gt=0, description="Posts per second.")
    total: int = Field(0, ge=0, description="Stop after this many posts; 0 = run forever.")


async def produce_round(settings: Settings, tracer: Tracer, posts: list[dict[str, object]]) -> int:
    """Publish ``posts``, each under a new producer span whose context travels in its traceparent header."""
    topic = settings.input_topic
    spans = [tracer.start_span(f"publish {topic}", context=Context(), kind=SpanKind.PRODUCER,
                               attributes=publish_attributes(topic, str(post["post_id"]))) for post in posts]
    try:
        return await produce(settings, [post_record(p, traceparent_of(s)) for p, s in zip(posts, spans, strict=True)])
    finally:
        for span in spans:
            span.end()


async def main(settings: Settings, pace: ProducerSettings) -> None:
    """Produce rounds of sample posts (one second's worth each) until ``pace.total`` is reached."""
    provider = build_tracer_provider()
    tracer = provider.get_tracer("moderator.sample-producer")
    await ensure_topics(settings)
    per_round = max(1, round(pace.rate))
    sent, round_no, previous = 0, 0, None
    try:
        while pace.total == 0 or sent < pace.total:
            posts = sample_posts(per_round, seed=round_no, prefix=f"sample-{round_no}")
            if previous is not None:
                posts.append({**previous, "post_id": f"{previous['post_id']}-repost"})
            sent += await produce_round(settings, tracer, posts)
            log.info("sent %d posts", sent)
            previous, round_no = posts[0], round_no + 1
            await asyncio.sleep(per_round / pace.rate)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(Settings(), ProducerSettings()))
