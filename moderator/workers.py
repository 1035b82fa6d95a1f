"""`moderator serve --workers N`: N service processes on one machine, each a member of the consumer group.

One Python process cannot feed a large GPU: its event loop, validation, policy and publishing run on
one core, and preparation shares that process's GIL. N processes each consume their share of the
input partitions (Kafka assigns them within the group), prepare on their own threads and submit
to the same GPU, whose work queue interleaves their batches. The topic needs at least N partitions:
a member without one sits idle.

The supervisor forwards SIGTERM/SIGINT (each worker drains, publishes and commits before exiting) and
restarts a worker that dies, unless it dies within ``START_GRACE_S`` of starting: that is a
configuration error, and every worker is stopped with its exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from moderator.model.prepare import cpu_count

log = logging.getLogger(__name__)

START_GRACE_S = 10.0


class Worker:
    """One `moderator serve` child process."""

    def __init__(self, index: int, command: list[str], env: dict[str, str]) -> None:
        self.index, self.command, self.env = index, command, env
        self.process = subprocess.Popen(command, env=env)
        self.started = time.monotonic()

    def restart(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env)
        self.started = time.monotonic()


def worker_env(count: int, index: int) -> dict[str, str]:
    """Worker ``index``'s environment: the cores shared out among the preparation pools, and its own
    metrics port (``MODERATOR_METRICS_PORT`` + index) when metrics are served."""
    env = dict(os.environ)
    env.setdefault("MODERATOR_PREPARE_WORKERS", str(max(1, cpu_count() // count)))
    port = env.get("MODERATOR_METRICS_PORT")
    if port and port.isdigit() and int(port):
        env["MODERATOR_METRICS_PORT"] = str(int(port) + index)
    return env


def run_workers(count: int, log_level: str) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; returns the largest exit code of their last runs."""
    command = [sys.executable, "-m", "moderator", "serve", "--workers", "1", "--log-level", log_level]
    workers = [Worker(i, command, worker_env(count, i)) for i in range(count)]
    log.info("started %d workers (pids %s)", count, [w.process.pid for w in workers])
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    codes: dict[int, int] = {}
    try:
        while len(codes) < count:
            for worker in workers:
                code = worker.process.poll()
                if code is None or worker.index in codes:
                    continue
                if stopping:
                    codes[worker.index] = code
                elif time.monotonic() - worker.started < START_GRACE_S:
                    log.error("worker %d exited with %d right after starting: stopping all", worker.index, code)
                    codes[worker.index] = code
                    stop(signal.SIGTERM, None)
                else:
                    log.warning("worker %d exited with %d; restarting it", worker.index, code)
                    worker.restart()
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes.values(), default=0)
