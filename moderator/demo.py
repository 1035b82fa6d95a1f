"""`moderator demo`: embedded broker + Redis, the service, sample posts, decisions printed live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import SecretStr
from rich.console import Console

from moderator.api.keys import api_key_store, issue_api_key
from moderator.broker import ensure_topics
from moderator.client import produce, read_topic
from moderator.embedded.servers import endpoints_or_embedded
from moderator.ingest.validate import IngestLimits, validate_record
from moderator.model.base import ModelInput
from moderator.policy.loader import load_policy_set
from moderator.review.server import demo_review_app
from moderator.service import ModerationService, build_service, running
from moderator.settings import Settings
from moderator.testing.samples import malformed_records, records_for, sample_posts

T = TypeVar("T")
# After Ctrl-C the service, the review app and the clients get this long to close before the demo leaves them.
TEARDOWN_S = 0.5
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


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` on a daemon thread: Ctrl-C is not held up by it, and exit does not wait for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled by Ctrl-C meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, which re-raises it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the demo was interrupted
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="demo-model", daemon=True).start()
    return await future


async def _warm_inputs(settings: Settings, posts: list[dict[str, object]]) -> list[ModelInput]:
    """The model inputs of the first batch of samples: the warm-up runs the shapes the demo will."""
    limits = IngestLimits.from_settings(settings)
    first = posts[: settings.max_batch]
    return [await (await validate_record(record[1], limits)).model_input(limits) for record in records_for(first)]


async def _show_api(service: ModerationService, url: str, console: Console) -> None:
    """Create an API key, print how to call the API, and moderate one text through it."""
    assert service.redis is not None
    key = (await issue_api_key(api_key_store(service.redis, service.settings), "demo")).token.get_secret_value()
    console.print(f"moderation API [cyan]{url}/v1/moderations[/] and [cyan]{url}/v1/decide[/] "
                  f"(docs {url}/docs), key [bold]{key}[/]", soft_wrap=True)
    text = "send money now to claim your prize"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        response = await http.post("/v1/moderations", json={"input": text})
    result = response.json()["results"][0]
    top = sorted(result["category_scores"].items(), key=lambda kv: kv[1], reverse=True)[:2]
    console.print(f"API: {text!r} -> flagged={result['flagged']} "
                  + " ".join(f"{name}={score:.2f}" for name, score in top), soft_wrap=True)


async def _moderate_samples(settings: Settings, count: int, console: Console) -> None:
    """Load and warm the model, then run the service until every sample post has its decision."""
    await ensure_topics(settings)
    posts = sample_posts(count, seed=7, prefix="demo")
    # Loading and the first forward passes (lazy initialisation, thread pools) take seconds: done
    # before any post is produced, so the latencies shown are those of a running service.
    console.print("loading the model and warming it up ...")
    # The demo serves the API itself (on MODERATOR_API_PORT or a free port), with a fresh key secret
    # unless one is configured.
    secret = settings.api_key_secret.get_secret_value() or secrets.token_urlsafe(32)
    service = await _off_loop(build_service, settings.model_copy(update={"api_port": None,
                                                                         "api_key_secret": SecretStr(secret)}))
    await _off_loop(service.classifier.score_batch, await _warm_inputs(settings, posts))
    console.print(f"model: [cyan]{service.classifier.info.name}[/] {service.classifier.info.version} (warm)")
    console.print(f"[dim]latency: post consumed -> decision published. The {len(posts)} samples arrive at once and "
                  f"share model batches of up to {settings.max_batch}, so they wait for a whole batch; reposts are "
                  "cache hits.[/]")
    repeats = [{**p, "post_id": f"{p['post_id']}-repost"} for p in posts[: max(1, count // 4)]]
    malformed = malformed_records("demo-bad")[:4]
    async with running(service), service.serving_api(settings.api_port or 0) as api:
        await _show_api(service, f"http://{settings.api_host}:{api.port}", console)
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


class _Interrupted(BaseException):
    """Ctrl-C or SIGTERM: unwinds the demo, stopping the servers on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _silence(console: Console) -> None:
    """After an interrupt nothing more is printed: no late table rows, no teardown log noise."""
    console.quiet = True
    logging.disable(logging.CRITICAL)


def _run_loop(settings: Settings, count: int, console: Console) -> int:
    """Run the demo's event loop; Ctrl-C or SIGTERM cancels it, and teardown gets ``TEARDOWN_S`` at most."""
    loop = asyncio.new_event_loop()
    main = loop.create_task(run_demo(settings, count, console))
    received: list[int] = []

    def abandon() -> None:  # raised out of run_until_complete: the servers are stopped, the rest is left behind
        raise _Interrupted(received[0])

    def interrupt(signum: int) -> None:
        if received:
            return
        received.append(signum)
        _silence(console)
        main.cancel()
        loop.call_later(TEARDOWN_S, abandon)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig)
    try:
        loop.run_until_complete(main)
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)  # the servers are being stopped: a second Ctrl-C waits for that
        if not received:
            loop.close()
    return 128 + received[0] if received else 0


def demo(settings: Settings, count: int) -> int:
    """Start what is not configured (broker, Redis) on loopback, run the demo, stop everything.

    Returns the exit code: 0, or 128 + the signal number when interrupted (130 for Ctrl-C).
    """
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_policy_set(settings.policy_dir)  # a missing or broken policy directory fails before any server starts

    def first_interrupt(signum: int, _frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        _silence(console)
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, first_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with endpoints_or_embedded(settings) as live:
            console.print(f"broker [cyan]{live.kafka_bootstrap}[/], redis [cyan]{live.redis_url}[/]")
            return _run_loop(live, count, console)
    except _Interrupted as exc:
        return 128 + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
