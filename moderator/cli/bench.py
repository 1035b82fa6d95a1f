"""`moderator bench`: benchmarks printed as side-by-side ratios."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from moderator.cli.errors import fail
from moderator.settings import Settings


def bench(
    models: list[str] = typer.Option(["tiny", "offline"], "--model", "-m",
                                     help="tiny (random CLIP), offline (packaged stack) or a model dir; repeatable."),
    workloads: list[str] = typer.Option(["photos", "small"], "--workload", "-w",
                                        help="photos (1080-px JPEG photo posts, the headline) and/or small "
                                             "(128x96 images on half the posts); repeatable."),
    quick: bool = typer.Option(False, help="A small run (seconds): checks the harness, not the numbers."),
    max_batch_size: int = typer.Option(64, help="Largest batch size for the bare-model sweep and the pipeline."),
    output: Path = typer.Option(Path("bench-results/bench.json"), help="Where to write the JSON results."),
    plot_path: Path | None = typer.Option(None, "--plot", help="Save a throughput/latency chart (PNG) here."),
    api_clients: list[int] = typer.Option([1, 16, 200], "--api-clients",
                                          help="Concurrent HTTP API clients per level, beside the stream; "
                                               "repeatable. 0 skips the API benchmark."),
) -> None:
    """Bare model vs pipeline vs naive loop vs cache hits, and the HTTP API beside the stream, in one run."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from moderator.bench.report import plot, print_report, write_json
    from moderator.bench.suite import BenchPlan, run_model_suite
    from moderator.bench.workload import Workload
    from moderator.embedded.servers import endpoints_or_embedded

    for name in models:
        if name not in ("tiny", "offline") and not Path(name).is_dir():
            fail(f"--model {name}: not 'tiny', 'offline' or a model directory")
    logging.basicConfig(level=logging.WARNING)
    hf_logging.disable_progress_bar()  # saving the tiny test model drew a "Writing model shards" bar
    console = Console()
    plan = BenchPlan.make(quick, max_batch_size, [c for c in api_clients if c > 0])
    for name in workloads:
        if name not in ("photos", "small"):
            raise typer.BadParameter(f"unknown workload {name!r} (photos or small)")
    reports = []
    with endpoints_or_embedded(Settings()) as settings:
        for workload_name in workloads:
            workload = Workload.make(workload_name, photo_pool=8 if quick else 24)  # type: ignore[arg-type]
            for name in models:
                report = run_model_suite(name, settings, plan, max_batch_size, workload)
                print_report(report, console)
                reports.append(report)
    write_json(reports, output)
    console.print(f"results written to {output}")
    if plot_path is not None:
        plot(reports, plot_path)
        console.print(f"chart written to {plot_path}")


def bench_gpu(
    small: bool = typer.Option(False, help="Tiny models and a few posts: checks the harness (runs on CPU)."),
    output: Path = typer.Option(Path("bench-results"), help="Directory for gpu-bench.json and gpu-bench.md."),
    device: str | None = typer.Option(None, help="cuda, cuda:1 or cpu (default: cuda when present)."),
    processes: list[int] = typer.Option([], help="K for the several-process runs (repeatable; default 2 and 4)."),
) -> None:
    """Is the GPU kept fed? Pure-forward limit vs model stage vs photo pipeline, K processes with their own
    models vs K feeders sharing one model process, GPU busy %, batch-1 time split and low-load latency.

    The same as `python -m moderator.bench.gpu`, which needs only torch, transformers, numpy and Pillow.
    """
    from moderator.bench.gpu import main

    main([*(["--small"] if small else []), "--output", str(output), *(["--device", device] if device else []),
          *(arg for k in processes for arg in ("--processes", str(k)))])


def register(app: typer.Typer) -> None:
    """Add the bench commands to the CLI."""
    app.command()(bench)
    app.command("bench-gpu")(bench_gpu)
