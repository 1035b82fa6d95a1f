"""One instrumentation helper for every pipeline stage: span, stage timer and histogram at once.

A stage writes ``with telemetry.stage("validate", span=tracing.VALIDATE):`` and gets its span (a
child of the post's consume span, while spans are recorded), its share of the benchmark's
per-stage profile (``times``) and an observation in ``moderator_stage_seconds{stage}``. The
Prometheus metrics are the one set of counters; ``counts`` reads them back for tests, the demo
and the benchmarks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN, Span, get_current_span
from prometheus_client import Histogram

from moderator.telemetry import tracing
from moderator.telemetry.metrics import ServiceMetrics
from moderator.telemetry.stages import StageTimes


class Counts:
    """Read-only view of the service's counters (the Prometheus metrics), by the names tests and the demo use."""

    def __init__(self, metrics: ServiceMetrics, decision_sources: Iterable[str]) -> None:
        self._metrics = metrics
        self._sources = tuple(decision_sources)
        self.first_consumed_at: float | None = None  # wall clock (s): when throughput measurements start

    @staticmethod
    def _total(counter: object, by: str | None = None) -> dict[str, float]:
        totals: dict[str, float] = {}
        for family in counter.collect():  # type: ignore[attr-defined]
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels.get(by, "") if by else ""
                    totals[key] = totals.get(key, 0.0) + sample.value
        return totals

    @property
    def consumed(self) -> int:
        """Records consumed."""
        return int(self._total(self._metrics.consumed).get("", 0))

    @property
    def decisions(self) -> dict[str, int]:
        """Decisions published, by source (every source present)."""
        by_source = self._total(self._metrics.decisions, "source")
        return {s: int(by_source.get(s, 0)) for s in self._sources}

    @property
    def dead_letters(self) -> dict[str, int]:
        """Dead letters published, by reason."""
        return {k: int(v) for k, v in self._total(self._metrics.dead_letters, "reason").items()}

    @property
    def cache_errors(self) -> int:
        """Failed Redis score-cache round trips."""
        return int(self._total(self._metrics.cache_errors).get("", 0))

    @property
    def commits(self) -> int:
        """Offset commits."""
        return int(self._total(self._metrics.commits).get("", 0))


class Telemetry:
    """A service's tracer, metrics and stage timings, with ``stage()`` as the one way a stage is instrumented."""

    def __init__(self, decision_sources: Iterable[str], tracer_provider: TracerProvider | None = None) -> None:
        self.tracer_provider = tracer_provider or tracing.build_tracer_provider()
        self.tracer = self.tracer_provider.get_tracer(tracing.TRACER_NAME)
        # Without an exporter no span is ever recorded: stages then open no spans of their own (a
        # non-recording span still costs ~15 us of ids, sampling and context switching) and run in
        # the post's consume span, which alone carries the trace id into the decision.
        self.recording = tracing.records_spans(self.tracer_provider)
        self.metrics = ServiceMetrics()
        # Seconds per stage summed over posts or batches (stages overlap: they run concurrently).
        self.times = StageTimes()
        self.counts = Counts(self.metrics, decision_sources)
        self._stage_histograms: dict[str, Histogram] = {}

    def span(self, name: str, **span_options: object) -> contextlib.AbstractContextManager[Span]:
        """A child span of the current one named ``name`` while spans are recorded, else the current span
        (a new one only where there is none: its ids still name the trace in decisions and headers)."""
        if not self.recording:
            current = get_current_span()
            if current.get_span_context().is_valid:
                return contextlib.nullcontext(current)
        return self.tracer.start_as_current_span(name, **span_options)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def stage(self, name: str, span: str | None = None, **span_options: object) -> Iterator[Span]:
        """Time the block as stage ``name`` (profile + histogram), inside a span named ``span`` when given."""
        with (self.span(span, **span_options) if span is not None else contextlib.nullcontext(INVALID_SPAN)) \
                as current:
            started = time.perf_counter()
            try:
                yield current
            finally:
                elapsed = time.perf_counter() - started
                self.times.add(name, elapsed)
                self._stage_histogram(name).observe(elapsed)

    def _stage_histogram(self, name: str) -> Histogram:
        histogram = self._stage_histograms.get(name)
        if histogram is None:  # labels() takes a lock and builds a key: once per stage, not per post
            histogram = self._stage_histograms[name] = self.metrics.stage_seconds.labels(name)
        return histogram
