"""The metrics log: one JSON object per line (JSONL), flushed as soon as it is written.

Records have a ``kind``: "start" (config, model size, baselines), "train" (one optimizer
step: loss, lr, grad norm, speed), "eval" (train and val loss estimates) and "end".
A line is complete or absent: a run killed mid-write loses at most its last record,
and :func:`read_jsonl` skips a torn last line. ``minilooped.training.results`` turns
the log into tables and plots.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..atomic import atomic_write_text


def _clean(v):
    """JSON has no NaN or infinity: write them as null (the record keeps a "nonfinite" note)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # NumPy scalars
        return _clean(v.item())
    return v


class MetricsLogger:
    """Append records to ``path``; ``enabled=False`` (DDP ranks other than 0) writes nothing."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._f = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")

    def log(self, kind: str, **fields) -> dict:
        record = {"kind": kind, **_clean(fields)}
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
        return record

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete record of a JSONL file (a torn last line is skipped)."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the run stopped while writing this line
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return records


def truncate_after(path: str | os.PathLike, step: int) -> None:
    """Drop the records a resumed run will write again: everything from ``step`` on except
    the evaluation at ``step`` itself (the checkpoint was saved right after it). A train
    record's step is the index of the step it made (0 = the first)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path)
            if "step" not in r or r["step"] < step or (r["step"] == step and r.get("kind") == "eval")]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


__all__ = ["MetricsLogger", "read_jsonl", "truncate_after"]
