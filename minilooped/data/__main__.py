"""``python -m minilooped.data ...``: see :mod:`minilooped.data.cli`."""
import sys

from .cli import main

sys.exit(main())
