"""`moderator demo`: embedded broker + Redis, the service, sample posts, decisions printed live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import orjson
from rich.console import Console

from moderator.broker import ensure_topics
from moderator.client import produce, read_topic
from moderator.embedded.servers import endpoints_or_embedded
from moderator.review.server import demo_review_app
from moderator.service import build_service, running
from moderator.settings import Settings
from moderator.testing.samples import malformed_records, records_for, sample_posts

ACTION_STYLE = {"allow": "green", "review": "yellow", "block": "bold red"}


def _line(value: dict[str, object]) -> str:
    """One decision as a console line: id, action, top scores, rules fired, source, latency."""
    scores = value.get("scores")
    top = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:2] if isinstance(scores, dict) else []
    reasons = value.get("reasons")
    rules = ",".join(r["rule"] for r in reasons) if isinstance(reasons, list) and reasons else "-"
    action = str(value.get("action"))
    style = ACTION_STYLE.get(action, "")
    top_text = " ".join(f"{k}={v:.2f}" for k, v in top)
    return (f"{value.get('post_id')!s:<16} [{style}]{action:<6}[/] {top_text:<28} {rules:<30.30} "
            f"{value.get('source')!s:<6} {value.get('latency_ms')}ms")


async def _watch(settings: Settings, console: Console, expected_decisions: int, expected_dead: int) -> None:
    """Print decisions and dead letters as they arrive until all expected ones were seen."""

    async def decisions() -> None:
        async for record in read_topic(settings, settings.output_topic, until_count=expected_decisions,
                                       timeout_s=600):
            console.print(_line(orjson.loads(record.value)), soft_wrap=True)

    async def dead_letters() -> None:
        async for record in read_topic(settings, settings.dlq_topic, until_count=expected_dead, timeout_s=600):
            letter = orjson.loads(record.value)
            console.print(f"[magenta]dead letter[/] {letter['reason']}: {letter['detail'][:80]}")

    console.print(f"[bold]{'post_id':<16} {'action':<6} {'top scores':<28} {'rules fired':<30} source latency",
                  soft_wrap=True)
    await asyncio.gather(decisions(), dead_letters())


async def run_demo(settings: Settings, count: int, console: Console) -> None:
    """The review app and the sample run in one event loop; on a terminal the app stays up until Ctrl-C."""
    async with demo_review_app(settings) as review:
        console.print(f"review UI [cyan]{review.url}[/] (log in as [bold]{review.login}[/])")
        await _moderate_samples(settings, count, console)
        if sys.stdin.isatty():
            console.print(f"posts sent to review wait at [cyan]{review.url}[/]; Ctrl-C stops the demo")
            await asyncio.Event().wait()


async def _moderate_samples(settings: Settings, count: int, console: Console) -> None:
    """Run the service until every sample post has its decision."""
    await ensure_topics(settings)
    service = build_service(settings)
    console.print(f"model: [cyan]{service.classifier.info.name}[/] {service.classifier.info.version}")
    posts = sample_posts(count, seed=7, prefix="demo")
    repeats = [{**p, "post_id": f"{p['post_id']}-repost"} for p in posts[: max(1, count // 4)]]
    malformed = malformed_records("demo-bad")[:4]
    async with running(service):
        watcher = asyncio.create_task(_watch(settings, console, len(posts) + len(repeats), len(malformed)))
        try:
            await produce(settings, records_for(posts) + [m.record for m in malformed])
            while sum(service.counts.decisions.values()) < len(posts):
                await asyncio.sleep(0.1)
            await produce(settings, records_for(repeats))  # reposts of scored content: served from the cache
            await watcher
        finally:
            watcher.cancel()
    stats = service.counts
    console.print(f"[bold]done[/]: {sum(stats.decisions.values())} decisions {stats.decisions}, "
                  f"dead letters {stats.dead_letters}, batches {service.pipeline.infer.batcher.stats.sizes[:12]}")


def demo(settings: Settings, count: int) -> None:
    """Start what is not configured (broker, Redis) on loopback, run the demo, stop everything."""
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with endpoints_or_embedded(settings) as live:
        console.print(f"broker [cyan]{live.kafka_bootstrap}[/], redis [cyan]{live.redis_url}[/]")
        loop = asyncio.new_event_loop()
        main = loop.create_task(run_demo(live, count, console))
        # Ctrl-C cancels the demo task; the finally blocks stop the service and the servers in order.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, main.cancel)
            loop.add_signal_handler(signal.SIGTERM, main.cancel)
        try:
            loop.run_until_complete(main)
        except asyncio.CancelledError:
            console.print("[yellow]interrupted[/]")
        finally:
            loop.close()
