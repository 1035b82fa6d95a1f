"""The bare model: throughput at batch sizes 1, 2, 4, ... on prepared inputs, nothing else in the way.

Inputs are decoded and prepared (resized, tokenised) before the clock starts, as the service's
preparation pool does off the model thread; a classifier without a preparation step is timed on
decoded inputs, its whole ``score_batch``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel

from moderator.model.base import Classifier, ModelInput, staged


class ModelRow(BaseModel):
    """Bare model throughput at one batch size."""

    batch_size: int
    posts_per_s: float
    ms_per_batch: float


def bench_model(classifier: Classifier, inputs: Sequence[ModelInput], batch_sizes: Sequence[int],
                min_seconds: float = 1.0) -> list[ModelRow]:
    """Run whole batches over ``inputs`` (cycling) for at least ``min_seconds`` per batch size.

    Stops growing the batch when the device runs out of memory: that is the physical limit.
    """
    model = staged(classifier)
    prepared = [model.prepare([item]) for item in inputs]
    rows: list[ModelRow] = []
    for size in batch_sizes:
        batches = [[prepared[(start + j) % len(inputs)] for j in range(size)] for start in range(0, len(inputs), size)]
        done, elapsed, calls = 0, 0.0, 0
        try:
            model.infer(batches[-1])  # warm-up at this shape: lazy init, allocator arenas, kernels
            while elapsed < min_seconds or calls < 2:
                batch = batches[calls % len(batches)]
                started = time.perf_counter()
                model.infer(batch)
                elapsed += time.perf_counter() - started
                done += len(batch)
                calls += 1
        except MemoryError:
            break
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(exc).lower():
                raise
            break
        rows.append(ModelRow(batch_size=size, posts_per_s=done / elapsed, ms_per_batch=1000 * elapsed / calls))
    return rows
