"""``python -m minilooped.train``: train a model (see minilooped/training/cli.py and --help)."""
import sys

from .training.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
