"""Benchmarks: `python -m minilooped.bench ops`, `train`, `profile`, `kernels` and `exit`."""
