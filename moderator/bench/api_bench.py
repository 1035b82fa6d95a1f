"""The HTTP API beside the stream, in one service: request latency at 1, 16, 200 clients, the stream meanwhile.

One service runs with its API. A load-generator process (``moderator.bench.http_load``) drives
closed-loop clients against ``/v1/moderations`` while producing a steady stream of posts to the
topic; every request and post carries unique text, so each needs the model and both paths share
its batches. The stream is measured alone first, as the yardstick for "delayed".

Targets checked: at the largest client count, HTTP p99 ≤ max_wait + 2 × one batch's forward +
20 ms (the forward measured during that level), and no stream post lost or delayed past its
bound: the stream-alone p99 plus max_wait plus one batch's forward (a stream post may wait for one
more batch because HTTP requests fill it, no more).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import uuid
from collections.abc import Sequence

from pydantic import BaseModel, SecretStr

from moderator.api.keys import api_key_store, issue_api_key
from moderator.bench.http_load import LoadResult, LoadSpec
from moderator.bench.pipeline_bench import _percentiles, fresh
from moderator.broker import ensure_topics
from moderator.client import read_topic
from moderator.model.base import Classifier
from moderator.policy.store import PolicyStore
from moderator.service import ModerationService, connect_redis, running
from moderator.settings import Settings

HTTP_SLACK_MS = 20.0


class ApiLevel(BaseModel):
    """One load level: the HTTP path and the stream, measured together."""

    clients: int
    requests: int
    requests_per_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]  # non-200 statuses
    stream_posts: int
    stream_posts_per_s: float
    stream_latency_ms: dict[str, float]
    stream_lost: int
    forward_ms: float  # mean wall time of one model batch during the level
    mean_batch: float
    p99_bound_ms: float  # max_wait + 2 x forward + 20 ms


class ApiReport(BaseModel):
    """The API benchmark of one model."""

    max_batch: int
    max_wait_ms: float
    seconds: float
    stream_rate_per_s: float
    stream_alone: ApiLevel
    levels: list[ApiLevel]

    def stream_bound_ms(self, level: ApiLevel) -> float:
        """How late a stream post may be while the API is loaded: alone p99 + max_wait + one forward."""
        return self.stream_alone.stream_latency_ms.get("p99", float("nan")) + self.max_wait_ms + level.forward_ms

    def targets(self) -> dict[str, bool]:
        """Whether the busiest level met the HTTP p99 bound, and the stream lost and delayed nothing."""
        busiest = max(self.levels, key=lambda level: level.clients)
        return {
            "http_p99_within_bound": busiest.latency_ms.get("p99", float("inf")) <= busiest.p99_bound_ms,
            "no_stream_post_lost": all(level.stream_lost == 0 for level in self.levels),
            "stream_p99_within_bound": all(level.stream_latency_ms.get("p99", float("inf"))
                                           <= self.stream_bound_ms(level) for level in self.levels),
        }


class _Batches:
    """Model batch count, size and seconds from the service's metrics, read as deltas."""

    def __init__(self, service: ModerationService) -> None:
        self.registry = service.telemetry.metrics.registry

    def read(self) -> tuple[float, float, float]:
        value = self.registry.get_sample_value
        return (value("moderator_model_batch_seconds_count") or 0.0, value("moderator_model_batch_size_sum") or 0.0,
                value("moderator_model_batch_seconds_sum") or 0.0)


async def _load(spec: LoadSpec) -> LoadResult:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "moderator.bench.http_load",
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate(spec.model_dump_json().encode())
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed with exit code {process.returncode}")
    return LoadResult.model_validate_json(out)


async def _level(spec: LoadSpec, batches: _Batches, decided: dict[str, int], max_wait_ms: float) -> ApiLevel:
    before = batches.read()
    load = await _load(spec)
    after = batches.read()
    with contextlib.suppress(TimeoutError):  # stragglers: wait for every stream post, within reason
        async with asyncio.timeout(60):
            while not set(load.produced) <= set(decided):
                await asyncio.sleep(0.05)
    count, size, seconds = (a - b for a, b in zip(after, before, strict=True))
    forward_ms = 1000 * seconds / count if count else 0.0
    stream = [decided[p] - t for p, t in load.produced.items() if p in decided]
    ok = load.statuses.get("200", 0)
    return ApiLevel(
        clients=spec.clients, requests=ok, requests_per_s=round(ok / load.elapsed_s, 1),
        latency_ms=_percentiles(load.latencies_ms), errors={k: v for k, v in load.statuses.items() if k != "200"},
        stream_posts=len(stream), stream_posts_per_s=round(len(stream) / load.elapsed_s, 1),
        stream_latency_ms=_percentiles(stream), stream_lost=len(load.produced) - len(stream),
        forward_ms=round(forward_ms, 2), mean_batch=round(size / count, 1) if count else 0.0,
        p99_bound_ms=round(max_wait_ms + 2 * forward_ms + HTTP_SLACK_MS, 1),
    )


async def bench_api(settings: Settings, classifier: Classifier, policies: PolicyStore, clients: Sequence[int],
                    seconds: float, stream_rate_per_s: float, max_batch: int, max_wait_ms: float) -> ApiReport:
    """The stream alone, then the stream with ``clients`` HTTP clients per level, in one service."""
    settings = fresh(settings, max_batch=max_batch, max_wait_ms=max_wait_ms, api_max_in_flight=max(clients) * 2,
                     api_key_secret=SecretStr(secrets.token_urlsafe(32)))
    await ensure_topics(settings)
    decided: dict[str, int] = {}

    async def watch() -> None:
        async for record in read_topic(settings, settings.output_topic, timeout_s=3600):
            decided[record.key.decode()] = record.timestamp

    redis = connect_redis(settings)
    if redis is None:
        raise ValueError("the API benchmark needs Redis (API keys)")
    async with running(ModerationService(settings, classifier, policies, redis)) as service:
        while not service.runner.consumer or not service.runner.consumer.assignment():
            await asyncio.sleep(0.1)  # the group join is start-up, not latency
        watcher = asyncio.create_task(watch())
        try:
            async with service.serving_api(0) as server:
                issued = await issue_api_key(api_key_store(redis, settings), "bench")
                key = issued.token.get_secret_value()
                run = uuid.uuid4().hex[:6]

                def spec(n: int, prefix: str) -> LoadSpec:
                    return LoadSpec(host="127.0.0.1", port=server.port, key=key, clients=n, seconds=seconds,
                                    prefix=f"{run}-{prefix}", kafka_bootstrap=settings.kafka_bootstrap,
                                    input_topic=settings.input_topic, stream_rate=stream_rate_per_s)

                batches = _Batches(service)
                await _level(spec(1, "warmup").model_copy(update={"seconds": 1.0}), batches, decided, max_wait_ms)
                alone = await _level(spec(0, "alone"), batches, decided, max_wait_ms)
                levels = [await _level(spec(n, f"c{n}"), batches, decided, max_wait_ms) for n in clients]
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return ApiReport(max_batch=max_batch, max_wait_ms=max_wait_ms, seconds=seconds,
                     stream_rate_per_s=stream_rate_per_s, stream_alone=alone, levels=levels)
