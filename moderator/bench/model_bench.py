"""The bare model: throughput at batch sizes 1, 2, 4, ... on decoded inputs, nothing else in the way."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel

from moderator.model.base import Classifier, ModelInput


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
    rows: list[ModelRow] = []
    for size in batch_sizes:
        batches = [[inputs[(start + j) % len(inputs)] for j in range(size)] for start in range(0, len(inputs), size)]
        done, elapsed, calls = 0, 0.0, 0
        try:
            classifier.score_batch(batches[-1])  # warm-up at this shape: lazy init, allocator arenas, kernels
            while elapsed < min_seconds or calls < 2:
                batch = batches[calls % len(batches)]
                started = time.perf_counter()
                classifier.score_batch(batch)
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
