"""`moderator bench --quick` runs end to end and writes well-formed results (numbers are not asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Servers


def test_bench_quick_runs_and_writes_well_formed_results(servers: Servers, tmp_path: Path) -> None:
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    env = {"PATH": "/usr/bin:/bin", "MODERATOR_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
           "MODERATOR_REDIS_URL": servers.redis_url, "MODERATOR_KAFKA_SESSION_TIMEOUT_MS": "2000",
           "MODERATOR_KAFKA_HEARTBEAT_INTERVAL_MS": "300", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "moderator", "bench", "--quick", "--model", "tiny", "--max-batch-size", "8",
         "--output", str(out), "--plot", str(chart)],
        capture_output=True, text=True, timeout=480, env=env, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pipeline / naive per-message" in result.stdout
    assert "it/s]" not in result.stderr, "no progress bar leaks into the report"
    reports = json.loads(out.read_text())
    assert [(r["model"], r["workload"]) for r in reports] == [("tiny", "photos"), ("tiny", "small")]
    for report in reports:
        _check_report(report)
    assert "pipeline / naive one-thread decode + resize loop" in result.stdout
    assert "HTTP API beside the stream" in result.stdout
    assert chart.read_bytes().startswith(b"\x89PNG")


def _check_report(report: dict[str, Any]) -> None:
    assert [r["batch_size"] for r in report["bare"]] == [1, 2, 4, 8]
    assert {r["scenario"] for r in report["pipeline"]} == {"pipeline"}
    assert report["naive"]["posts"] > 0 and report["cache"]["posts"] > 0
    for run, adaptive in ((report["latency"], True), (report["latency_fixed_wait"], False)):
        assert run["adaptive_wait"] is adaptive
        assert set(run["latency_ms"]) == set(run["service_latency_ms"]) == {"p50", "p95", "p99"}
    for name, value in report["ratios"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, name
    api = report["api"]
    assert api["stream_alone"]["clients"] == 0 and [level["clients"] for level in api["levels"]] == [1, 16]
    for level in api["levels"]:
        assert level["requests"] > 0 and level["stream_posts"] > 0 and level["stream_lost"] == 0
        assert set(level["latency_ms"]) == {"p50", "p95", "p99"} and level["p99_bound_ms"] > 0
