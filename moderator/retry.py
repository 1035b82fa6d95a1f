"""Transient failures (broker or Redis unreachable) are retried with exponential backoff, never dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def with_backoff(attempt: Callable[[], Awaitable[T]], transient: type[Exception], what: str,
                       give_up: Callable[[], bool], first_delay_s: float = 0.1, max_delay_s: float = 5.0) -> T:
    """Await ``attempt()`` until it succeeds, sleeping between tries (doubling up to ``max_delay_s``).

    A ``transient`` error is retried unless ``give_up()`` says otherwise at that moment, in which
    case it is raised to the caller; any other error is raised at once.
    """
    delay = first_delay_s
    while True:
        try:
            return await attempt()
        except transient as exc:
            if give_up():
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
