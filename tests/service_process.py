"""Run `moderator serve` as a real child process, for kill -9 and SIGTERM tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from moderator.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The MODERATOR_* environment that reproduces ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATOR_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"MODERATOR_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class ServiceProcess:
    """`python -m moderator serve` with the given settings; output goes to a log file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "moderator", "serve"], env=settings_env(self.settings),
                                        stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """kill -9: no drain, no final commit."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
