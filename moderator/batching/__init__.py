"""Micro-batching: callers submit one item, the batch function sees lists."""

from moderator.batching.batcher import BatcherClosed, BatchStats, MicroBatcher
from moderator.batching.config import BatchingConfig
from moderator.batching.inbound import Inbound, Ticket

__all__ = ["BatchStats", "BatcherClosed", "BatchingConfig", "Inbound", "MicroBatcher", "Ticket"]
