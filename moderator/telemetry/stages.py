"""Time spent per named stage, summed: the benchmark's profile of where a post's time goes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class StageTimes:
    """Accumulates wall-clock seconds per stage; stages run concurrently, so sums may overlap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the duration of the block to ``seconds[stage]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
