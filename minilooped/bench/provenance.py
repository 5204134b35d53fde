"""Where a benchmark's numbers came from: the record every ``--json`` result file carries
(minilooped/provenance.py), with the threads every benchmark runs on."""
from __future__ import annotations

from ..provenance import machine, provenance as _provenance

THREADS = 2  # the budget: every benchmark runs on 2 threads


def provenance(argv) -> dict:
    """How a result file was made: command, commit, machine, date, threads."""
    return {**_provenance(["python", "-m", "minilooped.bench", *argv]), "threads": THREADS}


__all__ = ["THREADS", "machine", "provenance"]
