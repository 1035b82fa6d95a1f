"""Readiness: the service takes traffic only while the broker, Redis and the model are all usable."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

CHECK_TIMEOUT_S = 2.0


class _Info(Protocol):
    name: str
    version: str


class Model(Protocol):
    """What readiness needs of a classifier (a protocol, so telemetry never imports the model package)."""

    @property
    def info(self) -> _Info: ...


class Check(BaseModel):
    """One dependency's state."""

    ok: bool
    detail: str


class Readiness(BaseModel):
    """The body of ``/ready``: overall verdict and each dependency's check."""

    ready: bool
    checks: dict[str, Check]


async def _broker(consumer: AIOKafkaConsumer | None) -> Check:
    if consumer is None:
        return Check(ok=False, detail="not connected yet")
    try:
        topics = await asyncio.wait_for(consumer.topics(), CHECK_TIMEOUT_S)  # a metadata round trip
    except (KafkaError, TimeoutError) as exc:
        return Check(ok=False, detail=f"metadata request failed: {exc!r}")
    return Check(ok=True, detail=f"{len(topics)} topics visible")


async def _redis(redis: Redis | None) -> Check:
    if redis is None:
        return Check(ok=True, detail="not configured: running without the score cache")
    try:
        await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        return Check(ok=False, detail=f"ping failed: {exc!r}")
    return Check(ok=True, detail="ping ok")


async def check_readiness(consumer: AIOKafkaConsumer | None, redis: Redis | None,
                          classifier: Model | None, stopping: bool) -> Readiness:
    """Check every dependency; ``consumer`` is None until it has started (joined its group)."""
    model = (Check(ok=True, detail=f"{classifier.info.name} {classifier.info.version}") if classifier is not None
             else Check(ok=False, detail="not loaded"))
    broker, cache = await asyncio.gather(_broker(consumer), _redis(redis))
    checks = {"broker": broker, "redis": cache, "model": model,
              "serving": Check(ok=not stopping, detail="draining" if stopping else "consuming")}
    return Readiness(ready=all(c.ok for c in checks.values()), checks=checks)
