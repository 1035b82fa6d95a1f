"""Fixtures for tests, benchmarks and the demo: tiny random checkpoints and sample posts.

Never imported by the service's own modules (``tests/test_code_shape.py`` checks).
"""
