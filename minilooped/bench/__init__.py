"""Benchmarks: `python -m minilooped.bench ops` and `python -m minilooped.bench train`."""
