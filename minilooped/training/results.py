"""Read training logs (metrics.jsonl) into tables and loss-curve plots, for the book.

    from minilooped.training import results
    run = results.load_run("book/data/training/default_numpy.jsonl")   # or a run folder
    run.train[-1]["loss"], run.evals[-1]["val_loss"], run.start["unigram_entropy"]
    print(results.table({"core": run, "mirror": results.load_run(...)}))
    results.plot_losses({"core": run_a, "mirror": run_b})            # a matplotlib Axes

matplotlib is imported only by the plotting functions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import read_jsonl


@dataclass
class Run:
    path: Path
    start: dict = field(default_factory=dict)  # the "start" record: config, params, baselines
    train: list = field(default_factory=list)  # one record per logged step
    evals: list = field(default_factory=list)  # train_loss and val_loss estimates
    end: dict | None = None

    def column(self, key: str, kind: str = "train") -> tuple[list, list]:
        """(steps, values) of ``key`` in the train or eval records (values that are None skipped)."""
        rows = self.train if kind == "train" else self.evals
        pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]

    @property
    def final_val_loss(self) -> float | None:
        return self.evals[-1]["val_loss"] if self.evals else None

    @property
    def label(self) -> str:
        cfg = self.start.get("config", {})
        return f"{cfg.get('name', self.path.stem)} ({self.start.get('engine', '?')})"


def load_run(path: str | os.PathLike) -> Run:
    """A metrics.jsonl file, or a run folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}: pass a run folder or its metrics.jsonl")
    run = Run(path)
    for r in read_jsonl(path):
        kind = r.get("kind")
        if kind == "start":
            run.start = r
        elif kind == "train":
            run.train.append(r)
        elif kind == "eval":
            run.evals.append(r)
        elif kind == "end":
            run.end = r
    return run


def _as_runs(runs) -> dict[str, Run]:
    if isinstance(runs, (Run, str, os.PathLike)):
        runs = [runs]
    if not isinstance(runs, dict):
        runs = {(r.label if isinstance(r, Run) else str(r)): r for r in runs}
    return {k: (v if isinstance(v, Run) else load_run(v)) for k, v in runs.items()}


def summary(run: Run) -> dict:
    """One row: steps, tokens, time, final losses, baseline, median speed."""
    speeds = sorted(r["tok_per_s"] for r in run.train if r.get("tok_per_s"))
    step_ms = sorted(r["dt_ms"] for r in run.train if r.get("dt_ms"))
    last = run.end or (run.evals[-1] if run.evals else {})
    return {
        "steps": last.get("step"),
        "params": run.start.get("params"),
        "tokens": last.get("tokens"),
        "time_s": last.get("elapsed"),
        "train_loss": run.train[-1]["loss"] if run.train else None,
        "val_loss": run.final_val_loss,
        "unigram": run.start.get("unigram_entropy"),
        "ms_per_step": step_ms[len(step_ms) // 2] if step_ms else None,
        "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
    }


def table(runs, columns=("steps", "params", "time_s", "train_loss", "val_loss", "unigram", "ms_per_step",
                         "tokens_per_s"), fmt: str = "markdown") -> str:
    """A text table, one row per run (``runs``: dict label -> Run or path, or a list)."""
    runs = _as_runs(runs)
    rows = [[label] + [_fmt(summary(run)[c]) for c in columns] for label, run in runs.items()]
    head = ["run", *columns]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    if fmt == "markdown":
        line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in [head, *rows])


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and v >= 10_000:
        return f"{v:,}"
    return str(v)


def smooth(values, window: int):
    """Moving average over ``window`` values (shorter at the start), for noisy train losses."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(runs, ax=None, train: bool = True, val: bool = True, smoothing: int = 10, baseline: bool = True,
                x: str = "step", title: str | None = None):
    """Loss curves: smoothed train loss (thin), val loss (markers), unigram baseline (dashed).

    ``x`` is "step" or "tokens". Returns the Axes."""
    import matplotlib.pyplot as plt

    runs = _as_runs(runs)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for i, (label, run) in enumerate(runs.items()):
        color = f"C{i}"
        if train and run.train:
            xs = [r[x] for r in run.train]
            ax.plot(xs, smooth([r["loss"] for r in run.train], smoothing), color=color, lw=1, alpha=0.6,
                    label=f"{label} train")
        if val and run.evals:
            ax.plot([r[x] for r in run.evals], [r["val_loss"] for r in run.evals], "o-", color=color, ms=4,
                    label=f"{label} val")
    if baseline:
        h = next((r.start.get("unigram_entropy") for r in runs.values() if r.start.get("unigram_entropy")), None)
        if h is not None:
            ax.axhline(h, color="gray", ls="--", lw=1, label=f"unigram entropy {h:.2f}")
    ax.set_xlabel("step" if x == "step" else "tokens")
    ax.set_ylabel("loss (nats / token)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


__all__ = ["Run", "load_run", "summary", "table", "plot_losses", "smooth"]
