"""The same producer with confluent-kafka (librdkafka): the settings a platform's own services would use.

    python examples/confluent_producer.py examples/posts.jsonl --bootstrap localhost:9092 --topic posts

The librdkafka property names below are the same in every librdkafka client (Go, .NET, Node, C)
and, with the Java client's spelling, in Kafka's own producer.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

LIBRDKAFKA_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,  # exactly one copy per send, in order per partition
    "compression.type": "zstd",  # or lz4; moderator's consumer reads gzip, snappy, lz4 and zstd
    "linger.ms": 10,
    "batch.size": 1024 * 1024,
    "message.max.bytes": 16 * 1024 * 1024 + 1024,  # keep at or under MODERATOR_MAX_MESSAGE_BYTES + overhead
    # librdkafka hashes keys with CRC32 by default; murmur2 puts a post_id on the same partition as the Java
    # client and aiokafka do, so producers in several languages keep one post's records in order.
    "partitioner": "murmur2_random",
}


def publish(bootstrap: str, topic: str, posts: Iterable[dict[str, Any]], *, idempotent: bool = True) -> int:
    """Send every post keyed by its post_id; raise if any was not acknowledged."""
    producer = Producer({**LIBRDKAFKA_SETTINGS, "bootstrap.servers": bootstrap, "enable.idempotence": idempotent})
    failed: list[str] = []
    count = 0

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failed.append(f"{message.key()!r}: {error}")

    for post in posts:
        producer.produce(topic, json.dumps(post).encode(), key=str(post["post_id"]).encode(), on_delivery=delivered)
        producer.poll(0)
        count += 1
    if producer.flush(30) or failed:
        raise KafkaException(f"not delivered: {failed or 'flush timed out'}")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("posts", type=Path, help="JSONL file, one post per line")
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--topic", default="posts")
    parser.add_argument("--no-idempotence", action="store_true", help="for brokers without it (Tansu)")
    args = parser.parse_args()
    posts = [json.loads(line) for line in args.posts.read_text(encoding="utf-8").splitlines() if line.strip()]
    count = publish(args.bootstrap, args.topic, posts, idempotent=not args.no_idempotence)
    print(f"published {count} posts to {args.topic}")


if __name__ == "__main__":
    main()
