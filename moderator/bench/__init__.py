"""Benchmarks printed as side-by-side ratios: bare model, pipeline, naive per-message loop, cache hits."""
