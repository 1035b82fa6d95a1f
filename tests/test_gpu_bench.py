"""The GPU benchmark's small mode runs on CPU with only what the GPU machine has (numbers not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# The GPU machine has torch, transformers, torchvision, numpy and Pillow, and none of these.
BLOCKED = ("pydantic", "pydantic_settings", "aiokafka", "redis", "fastapi", "opentelemetry", "orjson", "typer",
           "httpx", "rich", "onnxruntime", "starlette", "uvicorn")

# A None entry in sys.modules makes `import x` fail and importlib.util.find_spec("x") answer None,
# exactly as for a package that is not installed.
RUN_WITHOUT_SERVICE_DEPENDENCIES = textwrap.dedent(f"""
    import runpy, sys

    for name in {BLOCKED!r}:
        sys.modules[name] = None
    sys.argv = ["gpu"] + sys.argv[1:]
    runpy.run_module("moderator.bench.gpu", run_name="__main__")
""")


def test_gpu_bench_small_mode_runs_without_service_dependencies(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_SERVICE_DEPENDENCIES, "--small", "--device", "cpu", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert report["small"] is True and report["nvjpeg"] is False
    assert [m["name"] for m in report["models"]] == ["tiny-clip", "tiny-siglip"]
    for model in report["models"]:
        for key in ("limit_posts_per_s", "bare_posts_per_s", "pipeline_posts_per_s"):
            assert model[key] > 0, key
        assert set(model["low_load_ms"]) == {"p50", "p99", "max"}
        assert set(model["batch1_split_ms"]) == {"prepare", "tokenise", "h2d", "forward", "d2h_scores", "total"}
        assert all(v > 0 for v in model["batch1_split_ms"].values()), model["batch1_split_ms"]
        assert model["gpu_busy_pct"] is None and model["gpu_busy_source"] == "n/a"
    # Both several-process arrangements ran (first shape only in small mode): every post came back
    # scored, and the shared model process joined the feeders' chunks into batches.
    arrangements = report["models"][0]["processes"]
    assert set(arrangements) == {"independent", "shared"}
    for arrangement in arrangements.values():
        assert arrangement["2"]["posts_per_s"] > 0 and arrangement["2"]["mean_batch"] >= 1
    assert arrangements["shared"]["2"]["mean_batch"] > 1
    table = (tmp_path / "gpu-bench.md").read_text()
    assert "pipeline / pure-forward limit" in table and "tiny-siglip (batch 8)" in table
    assert "K feeder processes sharing one model process" in table
