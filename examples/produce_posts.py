"""Publish posts to moderator's input topic with aiokafka, with the producer settings a platform would use.

    python examples/produce_posts.py examples/posts.jsonl --bootstrap localhost:9092 --topic posts

Each line of the file is one post (docs/contract/post.schema.json). Records are keyed by post_id, so
every record of a post lands on the same partition, and may carry a W3C ``traceparent`` header that
the decision's trace continues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",  # acknowledged once every in-sync replica has the post: nothing lost on a broker failover
    "enable_idempotence": True,  # no duplicates when a send is retried (Tansu, the embedded broker, lacks it)
    "compression_type": "zstd",  # JSON with base64 images compresses well; needs aiokafka[zstd] (cramjam)
    "linger_ms": 10,  # posts arriving together share one request
    "max_batch_size": 1024 * 1024,
    "max_request_size": 16 * 1024 * 1024,  # room for inline images, up to MODERATOR_MAX_MESSAGE_BYTES
}


async def publish(bootstrap: str, topic: str, posts: Iterable[dict[str, Any]], *, idempotent: bool = True,
                  traceparent: str | None = None) -> int:
    """Send every post, keyed by its post_id, and wait until the broker acknowledged all of them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER_SETTINGS, "enable_idempotence": idempotent})
    await producer.start()
    try:
        headers = [("traceparent", traceparent.encode())] if traceparent else None
        sent = [await producer.send(topic, json.dumps(post).encode(), key=str(post["post_id"]).encode(),
                                    headers=headers)
                for post in posts]
        await asyncio.gather(*sent)
        return len(sent)
    finally:
        await producer.stop()


def read_posts(path: Path) -> list[dict[str, Any]]:
    """The posts of a JSONL file, one JSON object per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("posts", type=Path, help="JSONL file, one post per line")
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--topic", default="posts")
    parser.add_argument("--no-idempotence", action="store_true", help="for brokers without it (Tansu)")
    args = parser.parse_args()
    count = asyncio.run(publish(args.bootstrap, args.topic, read_posts(args.posts),
                                idempotent=not args.no_idempotence))
    print(f"published {count} posts to {args.topic}")


if __name__ == "__main__":
    main()
