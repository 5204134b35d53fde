"""``python -m minilooped.evaluate``: val loss, FLOPs and speed across loop counts, and the
fit L(T) = L_inf + A exp(-T / tau) (see minilooped/training/evaluation.py and --help)."""
import sys

from .training.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
