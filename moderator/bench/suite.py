"""Run every scenario for one model and compute the ratios the README reports."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from pydantic import BaseModel

from moderator.bench.api_bench import ApiReport, bench_api
from moderator.bench.model_bench import ModelRow, bench_model
from moderator.bench.pipeline_bench import RunResult, bench_cache, bench_latency, bench_naive, bench_pipeline
from moderator.bench.profile import StageProfile, profile_stages
from moderator.bench.workload import Workload, model_inputs
from moderator.ingest.validate import IngestLimits
from moderator.model.base import Classifier, staged
from moderator.model.loader import load_classifier
from moderator.policy.loader import load_policy_set
from moderator.policy.store import PolicyStore
from moderator.settings import Settings
from moderator.testing.tiny_models import build_tiny_clip


class BenchPlan(BaseModel):
    """How much to run: ``quick`` is for the test suite and smoke checks."""

    posts: int
    naive_posts: int
    cache_posts: int
    latency_posts: int
    latency_rate_per_s: float
    batch_sizes: list[int]
    pipeline_configs: list[tuple[int, float]]
    model_seconds: float
    api_clients: list[int] = []  # HTTP API load levels (concurrent clients); empty = no API benchmark
    api_seconds: float = 10.0
    api_stream_rate_per_s: float = 50.0
    profile_posts: int = 64

    @classmethod
    def make(cls, quick: bool, max_batch_size: int, api_clients: list[int] | None = None) -> BenchPlan:
        sizes = [2**i for i in range(0, 12) if 2**i <= max_batch_size]
        clients = [1, 16, 200] if api_clients is None else api_clients
        if quick:
            return cls(posts=48, naive_posts=16, cache_posts=200, latency_posts=10, latency_rate_per_s=20,
                       batch_sizes=[s for s in sizes if s <= 8], pipeline_configs=[(8, 10.0)], model_seconds=0.2,
                       api_clients=[c for c in clients if c <= 16], api_seconds=1.0, api_stream_rate_per_s=10.0,
                       profile_posts=8)
        return cls(posts=600, naive_posts=150, cache_posts=5_000, latency_posts=60, latency_rate_per_s=10,
                   batch_sizes=sizes, pipeline_configs=[(8, 10.0), (max_batch_size // 2, 20.0), (max_batch_size, 50.0)],
                   model_seconds=2.0, api_clients=clients, profile_posts=64)

    def api_max_batch(self) -> int:
        """A batch that holds every waiting HTTP request plus the stream's posts (the next power of two
        over 1.25 x the most clients): each request then waits for at most the batch running now."""
        return 1 << (max(self.api_clients) * 5 // 4 - 1).bit_length()

    def scaled(self, factor: float) -> BenchPlan:
        """Fewer posts for slow models (the packaged stack runs OCR per image) and heavy posts (photos)."""
        return self.model_copy(update={
            "posts": max(16, int(self.posts * factor)), "naive_posts": max(8, int(self.naive_posts * factor)),
            "latency_posts": max(8, int(self.latency_posts * factor)),
            "latency_rate_per_s": self.latency_rate_per_s * factor,
            # Photo reposts are large records: a few hundred measure the cache path without filling the broker.
            "cache_posts": max(100, int(self.cache_posts * factor ** 2)),
            "profile_posts": max(8, int(self.profile_posts * factor)),
        })


class ModelReport(BaseModel):
    """Everything measured for one model, and the ratios derived from it."""

    model: str
    workload: str = "small"
    model_version: str
    device: str
    bare: list[ModelRow]
    pipeline: list[RunResult]
    naive: RunResult
    cache: RunResult
    latency: RunResult  # adaptive wait (the default)
    latency_fixed_wait: RunResult  # the same trickle with every batch held for max_wait
    profile: StageProfile | None = None  # one thread, stage by stage, and the naive decode + resize loop
    api: ApiReport | None = None  # the HTTP API beside the stream

    def bare_at(self, batch_size: int) -> ModelRow:
        """The bare-model row at the largest measured batch size not above ``batch_size``."""
        return max((r for r in self.bare if r.batch_size <= batch_size), key=lambda r: r.batch_size)

    @property
    def best_pipeline(self) -> RunResult:
        return max(self.pipeline, key=lambda r: r.posts_per_s)

    def p99_bound_ms(self, run: RunResult) -> float:
        """max_wait + 2 x the bare forward time of one batch of the run's mean size."""
        return (run.max_wait_ms or 0) + 2 * self.bare_at(max(1, round(run.mean_batch or 1))).ms_per_batch

    def ratios(self) -> dict[str, float]:
        best = self.best_pipeline
        bare = self.bare_at(best.max_batch or 1)
        nan = float("nan")
        return {
            "pipeline_vs_naive": best.posts_per_s / self.naive.posts_per_s,
            "pipeline_vs_bare_model_same_batch": best.posts_per_s / bare.posts_per_s,
            "cache_posts_per_s": self.cache.posts_per_s,
            "low_load_p99_ms": self.latency.latency_ms.get("p99", nan),
            "low_load_service_p99_ms": self.latency.service_latency_ms.get("p99", nan),
            "p99_bound_ms": self.p99_bound_ms(self.latency),
            "fixed_wait_p99_ms": self.latency_fixed_wait.latency_ms.get("p99", nan),
            "fixed_wait_service_p99_ms": self.latency_fixed_wait.service_latency_ms.get("p99", nan),
            "fixed_wait_p99_bound_ms": self.p99_bound_ms(self.latency_fixed_wait),
            "pipeline_vs_decode_loop": best.posts_per_s / self.profile.decode_loop_posts_per_s
            if self.profile is not None and self.profile.decode_loop_posts_per_s else nan,
        }


def _classifier(name: str, settings: Settings, policies: PolicyStore, workdir: Path) -> tuple[Classifier, Settings]:
    """``tiny`` (random CLIP built here), ``offline`` (the packaged stack) or a model directory/hub name."""
    heads = policies.current.head_spec()
    if name == "tiny":
        settings = settings.model_copy(update={"model": str(build_tiny_clip(workdir / "tiny-clip"))})
    elif name != "offline":
        settings = settings.model_copy(update={"model": name})
    else:
        settings = settings.model_copy(update={"model": ""})
    return load_classifier(settings, heads), settings


def run_model_suite(name: str, settings: Settings, plan: BenchPlan, max_batch_size: int,
                    workload: Workload | None = None) -> ModelReport:
    """All scenarios for one model on one workload, against the servers in ``settings``."""
    workload = workload or Workload.make("small")
    policies = PolicyStore(load_policy_set(settings.policy_dir))
    with tempfile.TemporaryDirectory(prefix="moderator-bench-") as work:
        classifier, settings = _classifier(name, settings, policies, Path(work))
        if name == "offline":
            plan = plan.scaled(0.5)
        if workload.name == "photos":
            plan = plan.scaled(0.5)
        limits = IngestLimits.from_settings(settings)
        tag = f"{name}-{workload.name}"

        def bench_posts(count: int, prefix: str, seed: int) -> list[dict[str, object]]:
            return workload.posts(count, prefix.replace(name, tag, 1), seed)

        posts = bench_posts(plan.posts, prefix=f"{name}-pipe", seed=1)
        # The bare model sees inputs decoded the way the service decodes them (JPEGs at its scale).
        inputs = model_inputs(posts[: max(plan.batch_sizes) * 2], limits, staged(classifier).min_decode_side())
        bare = bench_model(classifier, inputs, plan.batch_sizes, plan.model_seconds)
        profile = profile_stages(classifier, posts[: plan.profile_posts], limits, max(plan.batch_sizes))

        async def scenarios() -> tuple[list[RunResult], RunResult, RunResult, list[RunResult], ApiReport | None]:
            pipeline = [await bench_pipeline(settings, classifier, policies,
                                             bench_posts(plan.posts, prefix=f"{name}-pipe{i}", seed=10 + i), mb, mw)
                        for i, (mb, mw) in enumerate(plan.pipeline_configs)]
            naive = await bench_naive(settings, classifier, policies,
                                      bench_posts(plan.naive_posts, prefix=f"{name}-naive", seed=3))
            cache = await bench_cache(settings, classifier, policies,
                                      bench_posts(plan.posts, prefix=f"{name}-pipe0", seed=10), plan.cache_posts)
            mb, mw = plan.pipeline_configs[-1]
            latency = [await bench_latency(settings, classifier, policies,  # unique content: no cache hits
                                           bench_posts(plan.latency_posts, prefix=f"{name}-lat{seed}", seed=seed),
                                           mb, mw, plan.latency_rate_per_s, adaptive)
                       for seed, adaptive in ((4, True), (5, False))]
            api = (await bench_api(settings, classifier, policies, plan.api_clients, plan.api_seconds,
                                   plan.api_stream_rate_per_s, plan.api_max_batch(), settings.max_wait_ms)
                   if plan.api_clients else None)
            return pipeline, naive, cache, latency, api

        pipeline, naive, cache, (adaptive, fixed), api = asyncio.run(scenarios())
        device = str(getattr(classifier, "device", "cpu"))
        return ModelReport(model=name, workload=workload.name, model_version=classifier.info.version, device=device,
                           bare=bare, pipeline=pipeline, naive=naive, cache=cache, latency=adaptive,
                           latency_fixed_wait=fixed, profile=profile, api=api)
