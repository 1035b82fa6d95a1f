"""Micro-batching: callers submit one item, the batch function sees lists."""

from moderator.batching.batcher import BatchStats, MicroBatcher

__all__ = ["BatchStats", "MicroBatcher"]
