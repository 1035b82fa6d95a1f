"""Shared fixtures: real servers once per session, a tiny real model, isolated topics per test.

Endpoints come from MODERATOR_KAFKA_BOOTSTRAP / MODERATOR_REDIS_URL when set; with
MODERATOR_TEST_CONTAINERS=1 and a Docker engine, from testcontainers; otherwise the embedded
Tansu broker and redis-server are started on loopback ports.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moderator.embedded.servers import EmbeddedServer, redis_server, tansu_server
from moderator.settings import Settings
from moderator.testing.tiny_models import build_tiny_clip

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Servers:
    """Where the tests' broker and Redis are, and their process handles when embedded."""

    kafka_bootstrap: str
    redis_url: str
    broker: EmbeddedServer | None = None
    redis: EmbeddedServer | None = None


def _containers() -> Iterator[Servers]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer() as kafka, RedisContainer() as redis:
        host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        yield Servers(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The broker and Redis for the whole test session."""
    bootstrap, redis_url = os.environ.get("MODERATOR_KAFKA_BOOTSTRAP"), os.environ.get("MODERATOR_REDIS_URL")
    if bootstrap and redis_url:
        yield Servers(bootstrap, redis_url)
        return
    if os.environ.get("MODERATOR_TEST_CONTAINERS") == "1":
        yield from _containers()
        return
    logs = tmp_path_factory.mktemp("server-logs")
    broker = tansu_server(log_dir=logs)
    redis = redis_server(data_dir=tmp_path_factory.mktemp("redis"), log_dir=logs)
    broker.start()
    redis.start()
    try:
        yield Servers(f"127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis.port}/0", broker, redis)
    finally:
        redis.stop()
        broker.stop()


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP checkpoint on disk, loaded through the real transformers code path."""
    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def make_settings(servers: Servers, **overrides: object) -> Settings:
    """Settings on the test servers with topics and a consumer group unique to this call."""
    run = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "kafka_bootstrap": servers.kafka_bootstrap,
        "redis_url": servers.redis_url,
        "input_topic": f"posts-{run}",
        "output_topic": f"decisions-{run}",
        "dlq_topic": f"posts.dlq-{run}",
        "consumer_group": f"moderator-{run}",
        "policy_dir": ROOT / "policies",
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 300,
        "commit_interval_ms": 100,
        "max_batch": 16,
        "max_wait_ms": 10,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(servers: Servers, tiny_clip_dir: Path) -> Settings:
    """Isolated settings for one test, scoring with the tiny CLIP model."""
    return make_settings(servers, model=str(tiny_clip_dir))
