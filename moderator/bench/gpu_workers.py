"""Several consumer processes on one GPU, in the two arrangements the GPU benchmark compares.

* **independent** (what ``moderator serve --workers K`` runs): K processes, each with its own copy
  of the model, its own preparation threads (cores / K) and its own model thread, submitting
  batches to the same GPU, whose work queue interleaves them.
* **shared**: K feeder processes prepare posts (JPEG decoded at the model's scale and resized
  straight into uint8 slots of shared memory, captions tokenised) and hand the prepared chunks to
  ONE model process, which joins what is queued into batches of up to ``max_batch`` posts, copies
  them to the device (on CUDA the slots are page-locked, so the copy is a DMA straight out of
  shared memory) and sends each feeder its chunk's scores back, which frees the slot.

Each run starts every process, waits until all are built and warmed up, then lets them go at once
and reports the total posts/s over the wall-clock span, the mean batch and GPU busy %. Like the rest
of the benchmark, only torch, transformers, numpy and Pillow are needed.
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from moderator.bench.gpu import (
    Bench,
    BusySampler,
    Post,
    Shape,
    _dtype,
    build_preparer,
    decode_at_scale,
    shapes,
)
from moderator.model.prepare import PreparedBatch, Preparer, cpu_count, to_device_pixels

SLOTS_PER_FEEDER = 3  # one being filled, one queued, one on the model: preparation never waits on the GPU
START_TIMEOUT_S = 900.0  # building so400m-shaped models in every process takes a while


@dataclass(frozen=True)
class Setup:
    """What every process of one arrangement needs: the shape, the posts, the device and its share.

    Plain data only: run as ``python -m``, the benchmark's classes live in ``__main__``, which the
    spawned processes cannot import, so the shape travels by name and the posts as tuples.
    """

    shape_name: str
    small: bool
    pipeline_posts: int
    photo_posts: tuple[tuple[str, bytes], ...]
    device: str
    processes: int

    @property
    def shape(self) -> Shape:
        """The benchmark's shape of that name, with this run's post count."""
        shape = next(s for s in shapes(self.small) if s.name == self.shape_name)
        return replace(shape, pipeline_posts=self.pipeline_posts)

    @property
    def posts(self) -> list[Post]:
        return [Post(text, jpeg) for text, jpeg in self.photo_posts]

    @property
    def threads(self) -> int:
        """Preparation threads per process: the cores shared out."""
        return max(1, cpu_count() // self.processes)

    def stream(self) -> list[Post]:
        """One process's posts: ``pipeline_posts`` of them, cycling through the photo pool."""
        posts = self.posts
        return [posts[i % len(posts)] for i in range(self.pipeline_posts)]


@dataclass(frozen=True)
class Share:
    """One process's report: posts it got scores for, its wall-clock start and end, model batch sizes,
    and the seconds its model thread spent in the model stage (None: a feeder, it has no model)."""

    posts: int
    started: float | None
    ended: float | None
    batch_sizes: list[int]
    model_busy_s: float | None


@dataclass(frozen=True)
class Arrangement:
    """One arrangement's result at one process count.

    ``model_busy_pct``: the share of the run each model thread spent in the model stage (host side:
    copies, kernel launches, waiting for the results), averaged over the processes with a model. Near
    100% with the GPU not busy: the model thread's own Python is the limit, and more model processes
    help; well under 100%: preparation does not keep up.
    """

    posts_per_s: float
    mean_batch: float
    gpu_busy_pct: float | None
    model_busy_pct: float


# ----- independent processes, each with its own model --------------------------------------------


def _independent(setup: Setup, barrier: Any, report: Any) -> None:
    """A `serve --workers K` member: its own model, preparation pool, micro-batcher and model thread."""
    device = torch.device(setup.device)
    shape = setup.shape
    bench = Bench(shape, device, _dtype(device), setup.posts, 0.0, 1, setup.threads)
    posts = setup.stream()
    asyncio.run(bench._through_pipeline(posts[: 2 * shape.batch], False, None))  # warm-up
    barrier.wait()
    started = time.time()
    bench.model_busy_s = 0.0
    _, _, sizes = asyncio.run(bench._through_pipeline(posts, False, None))
    report.put(Share(len(posts), started, time.time(), sizes, bench.model_busy_s))


def independent(setup: Setup) -> Arrangement:
    """Total posts/s of ``setup.processes`` processes each running the photo pipeline with its own model."""
    context = torch.multiprocessing.get_context("spawn")
    barrier, report = context.Barrier(setup.processes + 1), context.Queue()
    targets = [(_independent, (setup, barrier, report))] * setup.processes
    return _measure(context, targets, barrier, report, torch.device(setup.device))


# ----- feeder processes and one shared model process ---------------------------------------------


def _fill(pool: ThreadPoolExecutor, preparer: Preparer, slot: torch.Tensor,
          posts: Sequence[Post]) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize ``posts``' photos into the shared ``slot`` on the pool; their tokens."""
    recipe, pixels, side = preparer.recipe, slot.numpy(), preparer.min_decode_side
    assert recipe is not None
    list(pool.map(lambda k: recipe.pixels_into(decode_at_scale(posts[k].jpeg, side), pixels[k]), range(len(posts))))
    tokens = preparer([post.text for post in posts], [None] * len(posts))
    assert tokens.input_ids is not None and tokens.attention_mask is not None
    return tokens.input_ids, tokens.attention_mask


def _feeder(setup: Setup, index: int, slots: list[torch.Tensor], requests: Any, results: Any, barrier: Any,
            report: Any) -> None:
    """Prepare this feeder's posts chunk by chunk into its slots; count the scores that come back."""
    preparer = build_preparer(setup.shape, setup.posts)
    posts, chunk = setup.stream(), len(slots[0])
    with ThreadPoolExecutor(setup.threads, thread_name_prefix="prepare") as pool:
        _fill(pool, preparer, slots[0], posts[:chunk])  # warm-up
        barrier.wait()
        started = time.time()
        free, scored = list(range(len(slots))), 0
        for first in range(0, len(posts), chunk):
            part = posts[first : first + chunk]
            while not free:  # every slot is queued or on the model: wait for scores to free one
                slot, scores = results.get()
                free.append(slot)
                scored += len(scores)
            slot = free.pop()
            ids, mask = _fill(pool, preparer, slots[slot], part)
            requests.put((index, slot, len(part), ids, mask))
        while scored < len(posts):
            scored += len(results.get()[1])
    requests.put((index, None, 0, None, None))  # this feeder is done
    report.put(Share(scored, started, time.time(), [], None))


def _page_lock(slot: torch.Tensor) -> torch.Tensor:
    """Register a shared-memory slot with CUDA so its copies to the device are DMA, without a staging copy.

    Where registration is refused the slot stays pageable and ``to_device_pixels`` stages it through
    pinned memory instead (one extra host copy).
    """
    try:
        cudart: Any = torch.cuda.cudart()
        cudart.cudaHostRegister(slot.data_ptr(), slot.numel() * slot.element_size(), 0)
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    return slot


def _model_process(setup: Setup, slots: list[list[torch.Tensor]], requests: Any, results: list[Any], barrier: Any,
                   report: Any) -> None:
    """The one model: join the queued chunks into batches, copy them to the device, run, send scores back."""
    device = torch.device(setup.device)
    shape, posts = setup.shape, setup.posts
    bench = Bench(shape, device, _dtype(device), posts, 0.0, 1, 1)
    if device.type == "cuda":
        slots = [[_page_lock(slot) for slot in feeder] for feeder in slots]
    assert bench.forward.scale_shift is not None
    warm = [bench.prepare_post(posts[i % len(posts)]) for i in range(shape.batch)]
    bench.infer(warm)
    bench.infer(warm[:1])

    def on_device(index: int, slot: int, n: int, ids: np.ndarray, mask: np.ndarray) -> PreparedBatch:
        assert bench.forward.scale_shift is not None
        pixels = to_device_pixels(slots[index][slot][:n].numpy(), device, bench.dtype, *bench.forward.scale_shift)
        return PreparedBatch(size=n, image_rows=list(range(n)), text_rows=list(range(n)), pixel_values=pixels,
                             input_ids=ids, attention_mask=mask)

    barrier.wait()
    bench.model_busy_s = 0.0
    open_feeders, sizes = setup.processes, []
    while open_feeders:
        messages = [requests.get()]
        while sum(m[2] for m in messages) < shape.batch:  # greedy, as the adaptive batcher under load
            try:
                messages.append(requests.get_nowait())
            except queue.Empty:
                break
        work = [m for m in messages if m[1] is not None]
        open_feeders -= len(messages) - len(work)
        if not work:
            continue
        scores = bench.infer([on_device(*m) for m in work])
        offset = 0
        for index, slot, n, _, _ in work:
            results[index].put((slot, scores[offset : offset + n]))
            offset += n
        sizes.append(offset)
    report.put(Share(0, None, None, sizes, bench.model_busy_s))


def shared(setup: Setup) -> Arrangement:
    """Total posts/s of ``setup.processes`` feeder processes sharing one model process."""
    context = torch.multiprocessing.get_context("spawn")
    feeders = setup.processes
    shape = setup.shape
    height, width = shape.recipe.output_hw
    chunk = max(1, shape.batch // feeders)  # one chunk from every feeder fills a batch
    slots = [[torch.empty((chunk, height, width, 3), dtype=torch.uint8).share_memory_()
              for _ in range(SLOTS_PER_FEEDER)] for _ in range(feeders)]
    requests, results = context.Queue(), [context.Queue() for _ in range(feeders)]
    barrier, report = context.Barrier(feeders + 2), context.Queue()
    targets: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        (_model_process, (setup, slots, requests, results, barrier, report))]
    targets += [(_feeder, (setup, i, slots[i], requests, results[i], barrier, report)) for i in range(feeders)]
    return _measure(context, targets, barrier, report, torch.device(setup.device))


# ----- running an arrangement --------------------------------------------------------------------


def _measure(context: Any, targets: Sequence[tuple[Callable[..., None], tuple[Any, ...]]], barrier: Any, report: Any,
             device: torch.device) -> Arrangement:
    """Start the processes, release them together once all are ready, sample the GPU until all report."""
    processes = [context.Process(target=fn, args=args, daemon=True) for fn, args in targets]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while barrier.n_waiting < len(processes):
            _check(processes)
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark processes did not get ready in time")
            time.sleep(0.05)
        barrier.wait()
        with BusySampler(device) as busy:
            shares = _collect(processes, report)
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    timed = [s for s in shares if s.started is not None and s.ended is not None]
    span = max(s.ended for s in timed if s.ended) - min(s.started for s in timed if s.started)
    sizes = [n for s in shares for n in s.batch_sizes]
    busy_s = [s.model_busy_s for s in shares if s.model_busy_s is not None]
    return Arrangement(posts_per_s=round(sum(s.posts for s in shares) / span, 1),
                       mean_batch=round(statistics.fmean(sizes), 1) if sizes else 0.0, gpu_busy_pct=busy.mean,
                       model_busy_pct=round(100 * statistics.fmean(busy_s) / span, 1) if busy_s else 0.0)


def _check(processes: Sequence[Any]) -> None:
    failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
    if failed:
        raise RuntimeError(f"a benchmark process failed (exit code {failed[0]}; its traceback is above)")


def _collect(processes: Sequence[Any], report: Any) -> list[Share]:
    shares: list[Share] = []
    while len(shares) < len(processes):
        try:
            shares.append(report.get(timeout=1.0))
        except queue.Empty:
            _check(processes)
    return shares
