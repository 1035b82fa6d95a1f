"""Backoff retries: transient errors are retried with growing delays, give_up and other errors end it."""

from __future__ import annotations

import asyncio

import pytest

from moderator.retry import with_backoff


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


async def test_transient_errors_are_retried_with_doubling_capped_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("moderator.retry.asyncio.sleep", record)
    attempt = Flaky(5, ConnectionError("down"))
    assert await with_backoff(attempt, ConnectionError, "test", lambda: False, 0.1, 0.5) == "ok"
    assert attempt.calls == 6
    assert slept == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


async def test_give_up_raises_the_transient_error_and_other_errors_are_not_retried() -> None:
    stopping = Flaky(1, ConnectionError("down"))
    with pytest.raises(ConnectionError):
        await with_backoff(stopping, ConnectionError, "test", lambda: True)
    assert stopping.calls == 1
    bug = Flaky(1, ValueError("bug"))
    with pytest.raises(ValueError):
        await with_backoff(bug, ConnectionError, "test", lambda: False)
    assert bug.calls == 1
