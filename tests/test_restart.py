"""Stopping the service mid-stream and starting it again leaves no valid post without a decision."""

from __future__ import annotations

import asyncio

from moderator.client import produce, read_topic
from moderator.service import build_service, run_service
from moderator.settings import Settings
from moderator.testing.samples import records_for, sample_posts
from tests.pipeline_helpers import collect, decided_ids, running_service


async def test_graceful_stop_mid_stream_then_restart_decides_every_post(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_in_flight": 32, "fetch_max_records": 16})
    posts = sample_posts(300, seed=11, prefix="restart")
    async with running_service(settings):
        await produce(settings, records_for(posts))
        await collect(settings, settings.output_topic, 60, timeout_s=90)
    before_restart = [r async for r in read_topic(settings, settings.output_topic, timeout_s=10, idle_s=1.0)]
    assert 60 <= len(before_restart) < len(posts), "the first instance stopped mid-stream"
    # Stopped mid-stream: most posts are still undecided; a new instance of the group picks them up.
    wanted = {str(p["post_id"]) for p in posts}
    async with running_service(settings):
        ids = await decided_ids(settings, wanted)
    assert set(ids) == wanted


async def test_crash_without_drain_redelivers_uncommitted_posts(settings: Settings) -> None:
    posts = sample_posts(200, seed=12, prefix="crash")
    service = build_service(settings)
    task = asyncio.create_task(run_service(service, install_signal_handlers=False))
    await produce(settings, records_for(posts))
    await collect(settings, settings.output_topic, 40, timeout_s=90)
    task.cancel()  # no drain, no final commit: like a crash of the consuming task
    await asyncio.gather(task, return_exceptions=True)
    wanted = {str(p["post_id"]) for p in posts}
    async with running_service(settings):
        ids = await decided_ids(settings, wanted)
    assert set(ids) == wanted, "at-least-once: nothing lost"
