"""The model batcher inside the running service: at low load, adaptive wait does not hold lone posts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from moderator.client import produce
from moderator.decisions.schema import Decision
from moderator.settings import Settings
from moderator.testing.samples import records_for
from tests.pipeline_helpers import collect, running_service

MAX_WAIT_MS = 400.0


async def _latencies_at_low_load(settings: Settings, adaptive_wait: bool) -> list[float]:
    """Four unique text posts, produced one by one further apart than max_wait; in-service latency of each."""
    settings = settings.model_copy(update={"max_batch": 64, "max_wait_ms": MAX_WAIT_MS, "adaptive_wait": adaptive_wait})
    run = uuid.uuid4().hex
    posts = [{"post_id": f"low-{i}", "user_id": "u-1", "text": f"a quiet afternoon {i} of {run}"} for i in range(4)]
    async with running_service(settings) as service:
        while not service.runner.consumer or not service.runner.consumer.assignment():
            await asyncio.sleep(0.05)
        for post in posts:
            await produce(settings, records_for([post]))
            await asyncio.sleep(2 * MAX_WAIT_MS / 1000)
        records = await collect(settings, settings.output_topic, len(posts))
        sizes = list(service.pipeline.infer.batcher.stats.sizes)
    assert sizes == [1, 1, 1, 1]
    by_id = {d.post_id: d for d in (Decision.model_validate_json(r.value) for r in records)}
    return [by_id[str(p["post_id"])].latency_ms for p in posts]


@pytest.mark.parametrize("adaptive_wait", [True, False])
async def test_lone_posts_wait_out_max_wait_only_without_adaptive_wait(settings: Settings,
                                                                       adaptive_wait: bool) -> None:
    latencies = await _latencies_at_low_load(settings, adaptive_wait)
    if adaptive_wait:  # nothing else is on its way to the model batcher, so none is held, the first included
        assert max(latencies) < MAX_WAIT_MS / 2, latencies
    else:
        assert min(latencies) >= MAX_WAIT_MS, latencies
