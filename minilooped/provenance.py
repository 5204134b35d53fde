"""Where a result file came from: command, commit, machine, date.

Every ``--json`` result (the benchmarks', ``python -m minilooped.evaluate``'s) carries this
record. It needs only the standard library, so every layer may use it, as atomic.py.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def provenance(command: list[str]) -> dict:
    """How a result file was made: ``command`` (the words of the command line), the commit
    of the package's repository (None outside one) and whether the package had uncommitted
    changes, the machine and the date (UTC)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    return {"command": " ".join(command),
            "commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "--", ".")),
            "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
