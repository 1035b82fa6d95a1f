"""`moderator demo` stops on Ctrl-C at any point: exit code 130, nothing printed after it, no teardown noise."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import Servers

ROOT = Path(__file__).resolve().parents[1]
# Generous: the demo gives its teardown half a second; the rest is a loaded CI machine.
EXIT_BOUND_S = 30


@contextlib.contextmanager
def _demo(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], queue.Queue[str]]]:
    """The demo in a subprocess, with its stdout lines as they come; killed if a test fails before it exits."""
    process = subprocess.Popen([sys.executable, "-m", "moderator", "demo", "--count", "8"], cwd=ROOT,
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for(process: subprocess.Popen[bytes], lines: queue.Queue[str], marker: str) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while not any(marker in line for line in seen):
        assert process.poll() is None and time.monotonic() < deadline, (marker, seen)
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
    return seen


def _interrupt(process: subprocess.Popen[bytes], lines: queue.Queue[str]) -> tuple[list[str], str]:
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=EXIT_BOUND_S)
    time.sleep(0.2)  # the reader thread drains the pipe
    after: list[str] = []
    while not lines.empty():
        after.append(lines.get())
    return after, stderr.decode(errors="replace")


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATOR_")}
    run = uuid.uuid4().hex[:8]
    return {**env, "PYTHONPATH": str(ROOT), "MODERATOR_REVIEW_PORT": "0", "MODERATOR_INPUT_TOPIC": f"posts-{run}",
            "MODERATOR_OUTPUT_TOPIC": f"decisions-{run}", "MODERATOR_DLQ_TOPIC": f"posts.dlq-{run}",
            "MODERATOR_CONSUMER_GROUP": f"demo-{run}", **settings}


def test_ctrl_c_while_starting_exits_130_quietly() -> None:
    with _demo(_env()) as (process, lines):  # embedded servers: the interrupt lands while importing or starting them
        time.sleep(2)
        after, stderr = _interrupt(process, lines)
    assert process.returncode == 130, stderr
    assert not [line for line in after if not line.startswith("broker ")], after
    assert stderr == ""


def test_ctrl_c_while_the_model_loads_prints_no_model_line_or_table(servers: Servers) -> None:
    with _demo(_env(MODERATOR_KAFKA_BOOTSTRAP=servers.kafka_bootstrap, MODERATOR_REDIS_URL=servers.redis_url)) as (
            process, lines):
        _wait_for(process, lines, "loading the model")  # the packaged offline stack: seconds to load and warm
        after, stderr = _interrupt(process, lines)
    assert process.returncode == 130, stderr
    assert not any("model:" in line or "post_id" in line for line in after), after
    assert stderr == "", stderr


def test_ctrl_c_while_posts_are_decided_leaves_no_unclosed_clients(servers: Servers, tiny_clip_dir: Path) -> None:
    with _demo(_env(MODERATOR_KAFKA_BOOTSTRAP=servers.kafka_bootstrap, MODERATOR_REDIS_URL=servers.redis_url,
                    MODERATOR_MODEL=str(tiny_clip_dir))) as (process, lines):
        seen = _wait_for(process, lines, "post_id")
        assert any("(warm)" in line for line in seen), seen
        after, stderr = _interrupt(process, lines)
    assert process.returncode == 130, stderr
    assert not any(line.startswith("done") for line in after), after
    assert "Unclosed" not in stderr and stderr == "", stderr
