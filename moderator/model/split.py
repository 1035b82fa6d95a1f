"""Score a batch so that one bad input or an out-of-memory error never fails the whole batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def score_splitting(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R | Exception]:
    """Run ``fn`` on ``items``; on failure split the batch in halves and retry each half.

    CUDA out-of-memory shrinks the batch until it fits. Any other error is narrowed down to the
    single inputs that still fail alone, which come back as exceptions while the rest are scored.
    """
    if not items:
        return []
    try:
        results: list[R | Exception] = list(fn(items))
    except Exception as exc:  # noqa: BLE001 - every model error is narrowed down, never raised
        if isinstance(exc, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(items) == 1:
            log.warning("model failed on a single input: %r", exc)
            return [exc]
        mid = len(items) // 2
        log.info("batch of %d failed (%s); retrying split", len(items), type(exc).__name__)
        return score_splitting(fn, items[:mid]) + score_splitting(fn, items[mid:])
    if len(results) != len(items):
        raise RuntimeError(f"model returned {len(results)} results for {len(items)} inputs")
    return results
