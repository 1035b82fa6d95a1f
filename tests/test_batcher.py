"""The micro-batcher: fewer calls than items, no batch over the limit, errors stay per item."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from moderator.batching import BatcherClosed, BatchingConfig, Inbound, MicroBatcher


class CountingModel:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.calls.append(len(items))
        await asyncio.sleep(self.delay_s)
        return [ValueError(f"bad {i}") if i < 0 else i * 2 for i in items]


async def test_queued_items_share_forward_calls_within_max_batch() -> None:
    model = CountingModel(delay_s=0.01)
    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=50)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(100)))
    await batcher.close()
    assert results == [i * 2 for i in range(100)]
    assert len(model.calls) < 100
    assert max(model.calls) <= 8
    assert sum(model.calls) == 100


async def test_a_lone_item_waits_at_most_max_wait() -> None:
    model = CountingModel()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=30)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await batcher.submit(21) == 42
    assert loop.time() - start < 0.5
    assert model.calls == [1]
    await batcher.close()


async def test_items_that_waited_through_a_running_batch_go_as_soon_as_the_model_is_free() -> None:
    release = asyncio.Event()
    calls: list[list[int]] = []

    async def gated(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            await release.wait()
        return list(items)

    batcher = MicroBatcher(gated, max_batch=3, max_wait_ms=100)
    first = asyncio.gather(*(batcher.submit(i) for i in range(3)))  # a full batch: runs at once, held
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (3, 4)]
    await asyncio.sleep(0.3)  # 3 and 4 wait through the running batch, past max_wait
    release.set()
    await first
    late = asyncio.create_task(batcher.submit(5))  # arrives after the model is free: too late for 3 and 4
    assert await asyncio.gather(*waiting, late) == [3, 4, 5]
    await batcher.close()
    assert calls == [[0, 1, 2], [3, 4], [5]], "the waiting items were not held for another max_wait"


async def test_an_error_in_one_slot_fails_only_that_item() -> None:
    batcher = MicroBatcher(CountingModel(), max_batch=4, max_wait_ms=20)
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True)
    await batcher.close()
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)


async def test_a_failing_batch_function_fails_its_callers_and_the_batcher_keeps_serving() -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return list(items)

    batcher = MicroBatcher(flaky, max_batch=4, max_wait_ms=5)
    with pytest.raises(RuntimeError):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2
    await batcher.close()


async def test_adaptive_wait_closes_a_lone_item_at_once_when_arrivals_are_sparse() -> None:
    model = CountingModel()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=200, adaptive_wait=True)
    loop = asyncio.get_running_loop()
    waits = []
    for i in range(5):  # one post every 300 ms: none would join a batch within 200 ms
        start = loop.time()
        assert await batcher.submit(i) == i * 2
        waits.append(loop.time() - start)
        await asyncio.sleep(0.3)
    await batcher.close()
    assert model.calls == [1] * 5
    assert waits[0] >= 0.19, "the first item waits: no arrival rate is known yet"
    assert max(waits[1:]) < 0.1, waits


class RecordingModel:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        return list(items)


async def _spin(turns: int = 20) -> None:
    """Let the loop run every ready callback a few times over (no clock involved)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_with_an_inbound_count_a_batch_closes_at_once_when_nothing_is_on_its_way() -> None:
    # max_wait is an hour: a batch that waited for it would hang the test, not pass it.
    model, inbound = RecordingModel(), Inbound()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=3_600_000, adaptive_wait=True, inbound=inbound)
    assert await asyncio.wait_for(batcher.submit(1), 60) == 1  # the very first item too: no rate to learn
    with inbound.ticket() as ticket:  # a post on its way that ends early (cache hit): the batch stops waiting
        first = asyncio.ensure_future(batcher.submit(2))
        await _spin()
        assert not first.done(), "closed while a post was on its way"
        ticket.leave()
        assert await asyncio.wait_for(first, 60) == 2
    await batcher.close()
    assert model.batches == [[1], [2]]


async def test_with_an_inbound_count_a_batch_waits_for_the_posts_on_their_way() -> None:
    model, inbound = RecordingModel(), Inbound()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=3_600_000, adaptive_wait=True, inbound=inbound)

    async def post(item: int, stages: int) -> int:
        with inbound.ticket() as ticket:
            await _spin(stages)  # validate, cache lookup, prepare...
            ticket.leave()
            return await batcher.submit(item)

    results = await asyncio.wait_for(asyncio.gather(post(1, 0), post(2, 10), post(3, 30)), 60)
    later = await asyncio.wait_for(post(4, 5), 60)
    await batcher.close()
    assert (*results, later) == (1, 2, 3, 4)
    assert model.batches == [[1, 2, 3], [4]], "the posts on their way did not share the first item's batch"


async def test_with_an_inbound_count_max_wait_still_caps_the_wait() -> None:
    model, inbound = RecordingModel(), Inbound()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=0, adaptive_wait=True, inbound=inbound)
    with inbound.ticket():  # on its way for ever: the batch closes at its deadline regardless
        assert await asyncio.wait_for(batcher.submit(1), 60) == 1
    await batcher.close()
    assert model.batches == [[1]]


async def test_fixed_wait_holds_a_lone_item_until_max_wait() -> None:
    batcher = MicroBatcher(CountingModel(), max_batch=64, max_wait_ms=200, adaptive_wait=False)
    loop = asyncio.get_running_loop()
    await batcher.submit(0)
    await asyncio.sleep(0.3)
    start = loop.time()
    await batcher.submit(1)
    assert loop.time() - start >= 0.19
    await batcher.close()


async def test_adaptive_wait_still_gathers_a_steady_stream_into_batches() -> None:
    model = CountingModel()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=100, adaptive_wait=True)

    async def stream() -> list[int]:
        pending = []
        for i in range(40):  # one post every 5 ms: about 20 per 100 ms window
            pending.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.005)
        return list(await asyncio.gather(*pending))

    assert await stream() == [i * 2 for i in range(40)]
    await batcher.close()
    assert sum(model.calls) == 40
    assert max(model.calls) >= 8, model.calls


async def test_close_fails_every_waiter_of_the_running_and_the_queued_batches() -> None:
    started = asyncio.Event()

    async def stuck(items: Sequence[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()  # never returns: the batch is running when close() comes
        return list(items)

    batcher = MicroBatcher(stuck, max_batch=2, max_wait_ms=0)
    waiters = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await started.wait()
    await batcher.close()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert all(isinstance(r, BatcherClosed) for r in results), results
    with pytest.raises(BatcherClosed):
        await batcher.submit(9)


async def test_preferred_sizes_cut_a_batch_and_the_rest_lead_the_next() -> None:
    model = CountingModel()
    batcher = MicroBatcher.from_config(model, BatchingConfig(max_batch=8, max_wait_ms=300, preferred_sizes=(4,)))
    results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    await batcher.close()
    assert results == [i * 2 for i in range(8)]
    assert model.calls == [4, 4], "a full batch of 8 is cut to the preferred 4; the other 4 form the next"


def test_preferred_sizes_must_fit_max_batch() -> None:
    with pytest.raises(ValueError, match="preferred_sizes"):
        BatchingConfig(max_batch=4, preferred_sizes=(8,))
