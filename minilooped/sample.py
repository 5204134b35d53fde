"""``python -m minilooped.sample``: generate text from a checkpoint (see --help)."""
import sys

from .training.cli import sample_main

if __name__ == "__main__":
    sys.exit(sample_main())
