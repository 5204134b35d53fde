"""Measurements: named functions run after a training run, returning JSON numbers and lists.

Each takes a :class:`Trained` (the run's config, its metrics log, and on demand its trained
engine, built from the last checkpoint in a few milliseconds, and its data) plus keyword arguments from the study, and returns numbers, lists or
dicts of them; the summary (summary.py) gives mean and spread over seeds of every
number, elementwise for lists, key by key for dicts. Adding one is a few lines::

    @measurement("lens_loss")
    def lens_loss(run, sequences=4):
        x, y = run.val_batches(1)[0]                      # the first fixed val batch
        return _lab(run).logit_lens(run.model, x[:sequences], y[:sequences])["loss"].tolist()

and a study asks for it by name, ``measurements=("logit_lens",)`` or with arguments
``(("val_loss_by_loops", {"loops": [1, 2, 4]}),)``.

``on_diverged=True`` marks measurements that still mean something when training stopped
on a NaN or infinite loss (the curves up to that step, the model size); the others are
null for a diverged run.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import get_batch
from ..training import TrainConfig
from ..training.results import load_run


@dataclass(frozen=True)
class Measurement:
    name: str
    fn: Callable
    on_diverged: bool  # still taken when training diverged


MEASUREMENTS: dict[str, Measurement] = {}

# Taken after every run of every study.
DEFAULT_MEASUREMENTS = ("final_train_loss", "final_val_loss", "loss_curve", "train_curve", "train_seconds",
                        "ms_per_step", "params", "flops_per_token")


def measurement(name: str, on_diverged: bool = False):
    """Register ``fn(run: Trained, **kwargs)`` under ``name``."""
    def register(fn):
        if name in MEASUREMENTS:
            raise ValueError(f"measurement {name!r} is registered twice")
        MEASUREMENTS[name] = Measurement(name, fn, on_diverged)
        return fn
    return register


class Trained:
    """A finished run as measurements see it. The engine (with the last checkpoint's weights)
    and the data are built only when a measurement asks for them."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = load_run(self.run_dir)  # minilooped.training.results.Run: start, train, evals, end

    @cached_property
    def data(self):
        from ..training.run_data import load_run_data

        return load_run_data(self.cfg, self.cfg.model_config().block_size, log=lambda *a: None)

    @cached_property
    def model_config(self):
        return self.cfg.model_config(vocab_size=self.data.meta["vocab_size"])

    @cached_property
    def engine(self):
        from ..training.checkpoint import load_checkpoint
        from ..training.ddp import DistInfo
        from ..training.loop import make_engine

        engine = make_engine(self.cfg, self.model_config, DistInfo(device=self.cfg.resolved_device()))
        engine.load_weights(load_checkpoint(self.run_dir).weights)
        return engine

    @property
    def model(self):
        """The trained model (core GPT, or the torch mirror's with --backend=torch)."""
        return self.engine.raw_model

    def val_batches(self, n: int | None = None) -> list:
        """The fixed batches the training loop's val estimates use (same generator, same seed),
        so a loss measured here at the training depth equals the last logged val loss."""
        rng = np.random.default_rng([self.cfg.seed, 2])
        B, T = self.cfg.batch_size, self.model_config.block_size
        return [get_batch(self.data.val, B, T, rng) for _ in range(n or self.cfg.eval_iters)]

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.close()


# ---------------------------------------------------------------------- from the metrics log
@measurement("final_train_loss")
def final_train_loss(run: Trained):
    """The last evaluation's train-split estimate (eval_iters batches)."""
    return run.log.evals[-1]["train_loss"] if run.log.evals else None


@measurement("final_val_loss")
def final_val_loss(run: Trained):
    return run.log.final_val_loss


@measurement("loss_curve", on_diverged=True)
def loss_curve(run: Trained):
    """Every evaluation: step, train and val loss estimates, and any other per-eval series the
    log holds (e.g. val_loss_loops, the val loss at several depths)."""
    keys = ["step", "train_loss", "val_loss"]
    keys += sorted({k for r in run.log.evals for k in r} - set(keys) - {"kind", "tokens", "elapsed"})
    return {k: [r.get(k) for r in run.log.evals] for k in keys}


@measurement("train_curve", on_diverged=True)
def train_curve(run: Trained, points: int = 100):
    """The logged steps in at most ``points`` bins of equal length: the first step of each bin,
    the mean of every per-step series in it (minibatch loss, gradient norm before clipping,
    Parcae's sampled n_loops, diagnostics a training hook adds) and the largest gradient norm
    (grad_norm_max), so that a spike between two points still shows."""
    rows = run.log.train
    every = max(1, -(-len(rows) // points))  # ceil
    bins = [rows[i:i + every] for i in range(0, len(rows), every)]
    keys = ["loss", "grad_norm"]
    keys += sorted({k for r in rows for k in r} - set(keys) - _SPEED_KEYS - {"step"})
    out = {"step": [b[0]["step"] for b in bins]}
    for k in keys:
        out[k] = [_mean([r.get(k) for r in b]) for b in bins]
    out["grad_norm_max"] = [max((r["grad_norm"] for r in b if r.get("grad_norm") is not None), default=None)
                            for b in bins]
    return out


def _mean(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return sum(xs) / len(xs) if xs else None


_SPEED_KEYS = {"kind", "lr", "tokens", "dt_ms", "tok_per_s", "mfu", "elapsed"}  # the same in every run of a config


@measurement("train_seconds")
def train_seconds(run: Trained):
    """Training time (setup excluded), summed over resumed pieces of the run."""
    return run.log.end.get("elapsed") if run.log.end else None


@measurement("ms_per_step", on_diverged=True)
def ms_per_step(run: Trained):
    """Median milliseconds per optimizer step (evaluations and checkpoints excluded)."""
    times = [r["dt_ms"] for r in run.log.train if r.get("dt_ms")]
    return statistics.median(times) if times else None


@measurement("params", on_diverged=True)
def params(run: Trained):
    """Parameters, position embeddings excluded (nanoGPT's count)."""
    return run.log.start.get("params")


@measurement("flops_per_token", on_diverged=True)
def flops_per_token(run: Trained):
    """Training FLOPs per token, 6 N_applied + 12 L H Q T (minilooped.training.mfu)."""
    return run.log.start.get("flops_per_token")


# ---------------------------------------------------------------------- on the trained model
@measurement("val_loss_by_loops")
def val_loss_by_loops(run: Trained, loops=(1, 2, 4, 8)):
    """Val loss on the fixed val batches with the looped group run k times, for each k: the
    depth curve (test-time compute). null where the model cannot run k loops (gpt2 beyond 1,
    a recursive model beyond its n_loops)."""
    out = []
    for k in loops:
        try:
            out.append(run.engine.eval_loss(run.val_batches(), n_loops=k))
        except ValueError:
            out.append(None)
    return {"loops": list(loops), "val_loss": out}


@measurement("depth_fit")
def depth_fit(run: Trained, loops=(1, 2, 4, 8, 16)):
    """The depth curve (val_loss_by_loops) and its saturating fit L(T) = L_inf + A exp(-T / tau)
    (minilooped.training.evaluation.fit_depth_curve; ``fit.reason`` says why when no fit is
    meaningful: a rising or flat curve, fewer than 4 depths, undetermined parameters)."""
    from ..training.evaluation import fit_depth_curve

    curve = val_loss_by_loops(run, loops)
    points = [(k, v) for k, v in zip(curve["loops"], curve["val_loss"]) if v is not None]
    fit = fit_depth_curve(*zip(*points)) if points else {"fitted": False, "reason": "no depth could run"}
    return {**curve, "fit": {k: fit.get(k) for k in ("fitted", "reason", "L_inf", "A", "tau", "rms_residual")}}


def _lab(run: Trained):
    """The loop diagnostics of the run's framework: the core's or the mirror's (same names)."""
    if run.cfg.backend == "torch":
        from ..torch.models import diagnostics
    else:
        from ..models import diagnostics
    return diagnostics


@measurement("loop_diagnostics")
def loop_diagnostics(run: Trained, sequences: int = 4, jacobian: bool = True, iters: int = 30, tol: float = 1e-3):
    """diagnostics.loop_table on the first ``sequences`` sequences of the first val batch: per
    loop the hidden state's RMS and relative update, the logit lens (loss, KL to the last
    loop), the gradient norms after one backward (per loop, per layer, per block), the
    Jacobian spectral norm of each loop's map (power iteration, ``iters`` at most) and
    rho(A_bar) where the model has an injection. NaN (a loop with no h_t) becomes null."""
    x, y = run.val_batches(1)[0]
    table = _lab(run).loop_table(run.model, x[:sequences], y[:sequences], jacobian=jacobian, iters=iters, tol=tol)
    return {k: _json(v) for k, v in table.items()}


@measurement("parcae_rho")
def parcae_rho(run: Trained):
    """Parcae: the spectral radius rho(A_bar) of the injection's map on h (diagnostics.
    spectral_radius: max |entry| of a diagonal A_bar, max |eigenvalue| of a linear one) and the
    mean of its diagonal."""
    trunk = run.model.transformer.trunk
    if not hasattr(getattr(trunk, "injection", None), "A_bar"):
        return None
    a = np.asarray(_to_numpy(trunk.injection.A_bar()), dtype=np.float64)
    return {"rho": float(_lab(run).spectral_radius(run.model)), "mean_diag": float((np.diag(a) if a.ndim == 2 else a).mean())}


def _json(v):
    """A number or an array (any shape) as JSON numbers and nested lists, NaN as null."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        return float(a) if np.isfinite(a) else None
    return [_json(x) for x in a]


def _to_numpy(x):
    if hasattr(x, "detach"):  # torch
        return x.detach().cpu().numpy()
    from .. import backend

    return backend.to_numpy(x.data if hasattr(x, "data") else x)


def measure(run: Trained, specs, diverged: bool = False) -> dict:
    """Take every measurement of ``specs`` ("name" or ("name", kwargs)) on ``run``."""
    out = {}
    for spec in specs:
        name, kwargs = (spec, {}) if isinstance(spec, str) else spec
        m = MEASUREMENTS[name]
        out[name] = m.fn(run, **kwargs) if (m.on_diverged or not diverged) else None
    return out


def check_specs(specs) -> None:
    for spec in specs:
        name = spec if isinstance(spec, str) else spec[0]
        if name not in MEASUREMENTS:
            import difflib

            close = difflib.get_close_matches(name, list(MEASUREMENTS), n=3)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise ValueError(f"unknown measurement {name!r}{hint}; registered: {', '.join(sorted(MEASUREMENTS))}")


__all__ = ["measurement", "Measurement", "MEASUREMENTS", "DEFAULT_MEASUREMENTS", "Trained", "measure",
           "check_specs"]
