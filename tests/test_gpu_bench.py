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


def test_shared_model_process_scores_feeder_slots_as_one_process_scores_each_post() -> None:
    """What a feeder writes into its shared slot, and the model process copies from it, scores as the
    one-process path scores each post alone (in-process here; the run above covers the processes)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from moderator.bench import gpu, gpu_workers
    from moderator.model.prepare import PreparedBatch, to_device_pixels

    posts = gpu._posts(small=True)[:4]
    shape = gpu.shapes(small=True)[0]
    bench = gpu.Bench(shape, torch.device("cpu"), torch.float32, posts, 0.0, 1, 1)
    slot = torch.empty((len(posts), *shape.recipe.output_hw, 3), dtype=torch.uint8).share_memory_()
    with ThreadPoolExecutor(2) as pool:
        ids, mask = gpu_workers._fill(pool, gpu.build_preparer(shape, posts), slot, posts)
    assert bench.forward.scale_shift is not None
    pixels = to_device_pixels(slot.numpy(), bench.device, bench.dtype, *bench.forward.scale_shift)
    rows = list(range(len(posts)))
    shared = bench.infer([PreparedBatch(size=len(posts), image_rows=rows, text_rows=rows, pixel_values=pixels,
                                        input_ids=ids, attention_mask=mask)])
    alone = np.concatenate([bench.infer([bench.prepare_post(post)]) for post in posts])
    assert shared.shape == (len(posts), len(gpu.PROMPTS) - 1)
    np.testing.assert_allclose(shared, alone, atol=1e-5)
    assert np.ptp(alone, axis=0).max() > 0  # the posts score differently: rows cannot have been mixed up unseen
