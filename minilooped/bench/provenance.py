"""Where a result's numbers came from: the record every ``--json`` benchmark file and every
study result (minilooped.experiments) carries."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess

THREADS = 2  # the budget: every benchmark runs on 2 threads


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def record(command: str) -> dict:
    """How a result file was made: command, commit (and whether the work tree had uncommitted
    changes in minilooped/), machine, date."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    return {"command": command,
            "commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "--", "..")),
            "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def provenance(argv) -> dict:
    """A benchmark's record: :func:`record` of its command, and the thread count."""
    return {**record(" ".join(["python", "-m", "minilooped.bench", *argv])), "threads": THREADS}
