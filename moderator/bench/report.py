"""Print benchmark tables, write JSON, and optionally plot throughput vs batch size."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from moderator.bench.api_bench import ApiReport
from moderator.bench.suite import ModelReport


def print_report(report: ModelReport, console: Console) -> None:
    """The tables for one model, ratios last."""
    console.rule(f"[bold]{report.model}[/], {report.workload} posts ({report.model_version}) on {report.device}")
    bare = Table("batch", "posts/s", "ms/batch", title="bare model (decoded inputs, no I/O)")
    for row in report.bare:
        bare.add_row(str(row.batch_size), f"{row.posts_per_s:,.1f}", f"{row.ms_per_batch:.2f}")
    console.print(bare)

    runs = Table("scenario", "max_batch", "max_wait_ms", "posts", "posts/s", "mean batch", "p50/p95/p99 ms",
                 title="through the broker and Redis")
    for run in [*report.pipeline, report.naive, report.cache, report.latency, report.latency_fixed_wait]:
        lat = "/".join(f"{run.latency_ms[k]:.0f}" for k in ("p50", "p95", "p99")) if run.latency_ms else "-"
        scenario = run.scenario if run.adaptive_wait is None else \
            f"{run.scenario} ({'adaptive' if run.adaptive_wait else 'fixed'} wait)"
        runs.add_row(scenario, str(run.max_batch or "-"), str(run.max_wait_ms or "-"), str(run.posts),
                     f"{run.posts_per_s:,.1f}", f"{run.mean_batch:.1f}" if run.mean_batch else "-", lat)
    console.print(runs)

    best = report.best_pipeline
    stages = Table("stage", "ms per post", title=f"where the time goes (pipeline, max_batch={best.max_batch}; "
                                                 "stages overlap, so they do not add up to 1/throughput)")
    for stage, ms in best.stage_ms_per_post.items():
        stages.add_row(stage, f"{ms:.3f}")
    console.print(stages)

    if report.profile is not None:
        profile = Table("stage", "ms per post", title="one post's CPU work, stage by stage (one thread)")
        for stage, ms in report.profile.ms_per_post.items():
            profile.add_row(stage, f"{ms:.3f}")
        profile.add_row("naive loop: full decode + resize, one thread",
                        f"{report.profile.decode_loop_posts_per_s:,.1f} posts/s")
        console.print(profile)

    ratios = report.ratios()
    summary = Table("measure", "value", title="ratios (same run, same model, same broker)")
    summary.add_row("pipeline / naive per-message", f"{ratios['pipeline_vs_naive']:.2f}x")
    summary.add_row("pipeline / naive one-thread decode + resize loop", f"{ratios['pipeline_vs_decode_loop']:.2f}x")
    summary.add_row(f"pipeline / bare model at batch {best.max_batch}",
                    f"{ratios['pipeline_vs_bare_model_same_batch']:.0%}")
    summary.add_row("cache-hit path", f"{ratios['cache_posts_per_s']:,.0f} posts/s")
    for label, prefix, bound in (("adaptive wait", "low_load_", "p99_bound_ms"),
                                 ("fixed wait", "fixed_wait_", "fixed_wait_p99_bound_ms")):
        summary.add_row(f"low-load p99 in the service vs max_wait + 2 x forward ({label})",
                        f"{ratios[prefix + 'service_p99_ms']:.1f} ms vs {ratios[bound]:.1f} ms")
        summary.add_row(f"low-load p99 produce -> decision, through the broker ({label})",
                        f"{ratios[prefix + 'p99_ms']:.1f} ms")
    console.print(summary)
    if report.api is not None:
        print_api(report.api, console)


def print_api(api: ApiReport, console: Console) -> None:
    """The HTTP API beside the stream: one row per load level, then the targets."""
    table = Table("clients", "req/s", "p50/p99 ms", "errors", "stream/s", "stream p50/p99", "lost", "batch",
                  "forward ms", "p99 bound",
                  title=f"HTTP API beside the stream (max_batch={api.max_batch}, max_wait={api.max_wait_ms:g} ms, "
                        f"stream {api.stream_rate_per_s:g} posts/s, {api.seconds:g} s per level)")
    for level in (api.stream_alone, *api.levels):
        def pair(latency: dict[str, float]) -> str:
            return f"{latency['p50']:.0f}/{latency['p99']:.0f}" if latency else "-"

        table.add_row(str(level.clients) if level.clients else "none",
                      f"{level.requests_per_s:,.1f}" if level.clients else "-", pair(level.latency_ms),
                      str(sum(level.errors.values())), f"{level.stream_posts_per_s:,.1f}",
                      pair(level.stream_latency_ms), str(level.stream_lost), f"{level.mean_batch:.1f}",
                      f"{level.forward_ms:.1f}", f"{level.p99_bound_ms:.0f}" if level.clients else "-")
    console.print(table)
    console.print("targets: " + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in api.targets().items()))


def write_json(reports: list[ModelReport], path: Path) -> None:
    """All measurements and ratios as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = [{**r.model_dump(mode="json"), "ratios": r.ratios()} for r in reports]
    import orjson

    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def plot(reports: list[ModelReport], path: Path) -> None:
    """Throughput vs batch size (bare model and pipeline) and latency percentiles, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for report in reports:
        (bare,) = left.plot([r.batch_size for r in report.bare], [r.posts_per_s for r in report.bare], marker="o",
                            label=f"{report.model} ({report.workload}): bare model")
        color = bare.get_color()  # one colour per model: bare solid, pipeline squares, naive dashed
        left.plot([r.max_batch for r in report.pipeline], [r.posts_per_s for r in report.pipeline], marker="s",
                  linestyle=":", color=color, label=f"{report.model} ({report.workload}): pipeline")
        left.axhline(report.naive.posts_per_s, linestyle="--", linewidth=1, color=color,
                     label=f"{report.model} ({report.workload}): naive per-message")
        keys = ["p50", "p95", "p99"]
        for run, style, marker in ((report.latency, "-", "o"), (report.latency_fixed_wait, "--", "x")):
            if run.latency_ms:
                wait = "adaptive" if run.adaptive_wait else "fixed"
                right.plot(keys, [run.latency_ms[k] for k in keys], marker=marker, linestyle=style, color=color,
                           label=f"{report.model} ({report.workload}): {wait} wait")
    left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="posts/s", title="throughput")
    waits = sorted({r.latency.max_wait_ms for r in reports if r.latency.max_wait_ms is not None})
    right.set(ylabel="ms", title="produce -> decision at low load"
              + (f" (max_wait {', '.join(f'{w:g}' for w in waits)} ms)" if waits else ""))
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
