"""Batch splitting on CUDA out-of-memory and on inputs that fail alone."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from moderator.model.split import score_splitting


class MemoryBoundModel:
    """Raises CUDA OOM for batches above ``limit``, like a GPU model with too little memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, items: Sequence[int]) -> list[float]:
        self.calls.append(len(items))
        if len(items) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: batch of {len(items)}")
        return [x * 0.5 for x in items]


def test_oom_splits_until_batches_fit() -> None:
    model = MemoryBoundModel(limit=4)
    results = score_splitting(model, list(range(16)))
    assert results == [x * 0.5 for x in range(16)]
    # Halves are retried depth-first: 16 and 8 run out of memory, the quarters fit.
    assert model.calls == [16, 8, 4, 4, 8, 4, 4]


def test_oom_on_a_single_input_returns_the_error_in_place() -> None:
    results = score_splitting(MemoryBoundModel(limit=0), [1, 2])
    assert all(isinstance(r, torch.cuda.OutOfMemoryError) for r in results)


def test_bad_input_is_isolated() -> None:
    def model(items: Sequence[int]) -> list[int]:
        if 3 in items:
            raise ValueError("cannot score 3")
        return [x + 1 for x in items]

    results = score_splitting(model, [1, 2, 3, 4, 5])
    assert results[:2] == [2, 3] and results[3:] == [5, 6]
    assert isinstance(results[2], ValueError)
    assert score_splitting(model, []) == []


def test_wrong_result_count_is_a_bug_not_a_split() -> None:
    with pytest.raises(RuntimeError, match="returned 1 results for 2"):
        score_splitting(lambda items: [0.0], [1, 2])
