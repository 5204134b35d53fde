"""Loss against depth: ``python -m minilooped.evaluate RUN_OR_CHECKPOINT --n_loops=1,2,4,8,16``.

A looped model trained at one loop count can run at any other at test time (chapter 10,
test-time compute). For each loop count T this measures, on the same batches:

    val loss       the mean over ``eval_iters`` val batches, drawn once (a generator seeded
                   as estimate_loss's, so at the run's seed and batch size they are the very
                   batches its logged val loss used) and reused at every depth
    FLOPs/token    forward only, at T loops (mfu.forward_flops_per_token)
    tokens/s       the batches' tokens over the wall time of their forward passes

Parcae's random initial state h_0 is drawn from the engine's generator, which is put back
in the same state before every depth: each depth draws the same h_0 and a rerun repeats
(CuPy's generator exposes no state: there each depth draws its own).

Then it fits the saturating curve

    L(T) = L_inf + A exp(-T / tau)

with scipy.optimize.curve_fit: L_inf the loss of infinitely many loops, A the gain over
it at T = 0, tau the depth scale of the gain (in loops): each tau loops leave a fraction
1/e of the gain still to come, so ``loops_to_saturate`` (tau ln(A / eps), rounded up) loops
come within eps nats of L_inf. The fit is reported with the
standard errors of its parameters (the square roots of the diagonal of curve_fit's
covariance, scaled by the residual variance) and the RMS of its residuals. No fit is made,
and the reason is said instead, when it would not mean anything:

- the model is not looped (variant "gpt2": one depth only);
- fewer than 4 depths (3 parameters need at least one more point);
- the curve is flat: every loss within FLAT_TOL = 1e-4 nats of the lowest (no decay to fit;
  tau and A would be arbitrary);
- the curve rises: the loss at the deepest depth is above the lowest loss by more than
  ``rise_tol`` (0.002 nats by default). Extrapolating past the trained depth breaks some
  models down (their loss climbs back); a decaying exponential would hide that;
- curve_fit fails to converge, or converges to A <= 0 (a curve that does not decay);
- the depths do not determine the fit: the standard error of A or of tau exceeds the value
  itself (or is not finite). This happens when the loss has saturated before the smallest
  depth measured (the decay happens between T = 0 and T = 1, where no point is): any tau
  below about 0.3 loops fits equally well.

Depths a model cannot run are skipped with a note, not refused: a gpt2 model runs at
depth 1 only, and a recursive model only up to its n_loops (it can exit early, not loop
further). The result is one plain, JSON-ready dict (``evaluate_depths``) for the book and
the studies; ``format_report`` makes the table the command line prints.
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, CheckpointError, list_checkpoints, load_checkpoint
from .config import ConfigError, TrainConfig, _suggest, parse_cli, parse_loop_counts, parse_value

RISE_TOL = 0.002  # nats: how far the deepest loss may sit above the lowest before the curve "rises"
FLAT_TOL = 1e-4  # nats: a curve whose losses all lie this close to the lowest is flat
MIN_FIT_DEPTHS = 4

EVALUATE_USAGE = """usage: python -m minilooped.evaluate RUN_OR_CHECKPOINT_FOLDER [--key=value ...]

Val loss, forward FLOPs per token and tokens/s at several loop counts, on the same val
batches, then the fit L(T) = L_inf + A exp(-T / tau).

examples:
  python -m minilooped.evaluate runs/shakespeare-parcae
  python -m minilooped.evaluate runs/shakespeare-parcae --n_loops=1,2,4,8,16,32 --json=depths.json
  python -m minilooped.evaluate runs/x/ckpt_0001000 --backend=torch --eval_iters=50

keys: n_loops (1,2,4,8,16: the loop counts), backend (numpy|cupy|torch), device, eval_iters and
batch_size (0 = the run's), seed (the run's; also seeds Parcae's h_0), threads (numpy: the
run's), rise_tol (0.002 nats, see below), data_dir (if the run's data folder moved), json (also
write the result, with its provenance, to this file)

No fit is made for a non-looped model, fewer than 4 depths, a flat curve (all losses within
1e-4 nats), or a curve that rises (the deepest loss more than rise_tol above the lowest). Depths a model cannot run
(gpt2: above 1; recursive: above its n_loops) are skipped with a note.
"""


@dataclass
class EvalConfig:
    out_dir: str = ""
    n_loops: str = "1,2,4,8,16"
    backend: str = "numpy"
    device: str = ""
    eval_iters: int = 0
    batch_size: int = 0
    seed: int | None = None
    threads: int | None = None
    rise_tol: float = RISE_TOL
    data_dir: str = ""
    json: str = ""


def eval_config_from_cli(argv: list[str]) -> EvalConfig:
    folder, overrides = parse_cli(argv, default=None)
    hints = typing.get_type_hints(EvalConfig)
    values = {}
    for key, text in overrides.items():
        if key not in hints or key == "out_dir":
            raise ConfigError(f"unknown evaluate key --{key}{_suggest(key, hints)}. Keys: "
                              f"{', '.join(k for k in hints if k != 'out_dir')}")
        values[key] = parse_value(key, text, hints[key])
    if folder is None:
        raise ConfigError("give the run folder or checkpoint folder to evaluate, e.g. "
                          "python -m minilooped.evaluate runs/shakespeare-parcae")
    values["out_dir"] = folder
    return EvalConfig(**values)


# ---------------------------------------------------------------------- the measurement
def find_checkpoint(path) -> Checkpoint:
    """The checkpoint of a ``ckpt_*`` folder, or the latest one of a run folder."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist: give a run folder (holding ckpt_* folders) "
                              "or a checkpoint folder (ckpt_*)")
    if not path.name.startswith("ckpt_") and not list_checkpoints(path):
        raise CheckpointError(f"{path} is neither a run folder (it holds no ckpt_* folder) nor a checkpoint "
                              "folder (ckpt_*): train first, or give the folder a run was trained into "
                              "(its --out_dir)")
    return load_checkpoint(path)


def depths_for(model_config, requested: list[int]) -> tuple[list[int], list[dict]]:
    """(the depths the model can run, notes on those it cannot) of the requested loop counts."""
    if model_config.variant == "gpt2":
        return [1], [{"n_loops": n, "reason": "a gpt2 model applies each block once: depth 1 only"}
                     for n in requested if n != 1]
    if model_config.variant == "recursive":
        cap = model_config.n_loops
        return ([n for n in requested if n <= cap],
                [{"n_loops": n, "reason": f"past the recursive model's n_loops={cap}: it can exit early, "
                                          "not loop further"} for n in requested if n > cap])
    return list(requested), []


def _train_config(ckpt, cfg: EvalConfig) -> TrainConfig:
    """The run's TrainConfig, set up to rebuild its engine for ``cfg.backend`` in float32."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in ckpt.state.get("train_config", {}).items() if k in known}
    saved.update(backend=cfg.backend, device=cfg.device, compile=False, dtype="float32", resume=False,
                 eval_loops="", data_dir=cfg.data_dir or ckpt.state.get("data", {}).get("data_dir", ""))
    for key in ("eval_iters", "batch_size"):
        if getattr(cfg, key):
            saved[key] = getattr(cfg, key)
    if cfg.seed is not None:
        saved["seed"] = cfg.seed
    if cfg.threads is not None:
        saved["threads"] = cfg.threads
    return TrainConfig.from_dict(saved, source=f"{ckpt.path}/state.json")


def evaluate_depths(cfg: EvalConfig, log=print) -> dict:
    """Measure the checkpoint at each loop count of ``cfg.n_loops`` and fit L(T); returns a
    JSON-ready dict (see the module docstring)."""
    from ..models.config import GPTConfig
    from . import ddp
    from .loop import eval_batches, make_engine
    from .mfu import forward_flops_per_token
    from .run_data import load_run_data

    requested = parse_loop_counts(cfg.n_loops, "n_loops")
    if not requested:
        raise ConfigError("--n_loops is empty: give the loop counts to evaluate, e.g. --n_loops=1,2,4,8")
    if cfg.eval_iters < 0 or cfg.batch_size < 0:
        raise ConfigError("--eval_iters and --batch_size must be >= 1 (or 0 for the run's)")
    ckpt = find_checkpoint(cfg.out_dir)
    model_config = GPTConfig.from_dict(ckpt.state["model_config"])
    depths, skipped = depths_for(model_config, requested)
    if not depths:
        raise ConfigError(f"none of --n_loops={cfg.n_loops} can run: " + "; ".join(
            f"{s['n_loops']}: {s['reason']}" for s in skipped))
    tcfg = _train_config(ckpt, cfg)
    data = load_run_data(tcfg, model_config.block_size, log=log)
    data.check_vocab(model_config.vocab_size)
    engine = make_engine(tcfg, model_config, ddp.DistInfo(device=tcfg.resolved_device()))
    try:
        engine.load_weights(ckpt.weights)
        B, T = tcfg.batch_size, model_config.block_size
        batches = eval_batches(data.val, tcfg.seed, B, T, tcfg.eval_iters)
        numels = engine.named_numels()
        fresh = engine.engine_state()  # the generators as seeded: every depth starts from here
        engine.eval_loss(batches[:1], n_loops=depths[0])  # warm-up (allocations, torch's first call), untimed
        rows = []
        for n in depths:
            engine.load_engine_state(fresh)
            t0 = time.perf_counter()
            loss = engine.eval_loss(batches, n_loops=n)
            seconds = time.perf_counter() - t0
            rows.append({"n_loops": n, "val_loss": loss,
                         "flops_per_token": forward_flops_per_token(model_config, numels, n),
                         "tokens_per_s": len(batches) * B * T / seconds, "seconds": seconds})
        device = engine.device_name()
    finally:
        engine.close()
    if model_config.variant == "gpt2":
        fit = {"fitted": False, "reason": "the model is not looped (variant 'gpt2'): it has one depth only"}
    else:
        fit = fit_depth_curve([r["n_loops"] for r in rows], [r["val_loss"] for r in rows], cfg.rise_tol)
    return {
        "checkpoint": str(ckpt.path), "step": ckpt.step, "variant": model_config.variant,
        "trained_n_loops": model_config.n_loops, "model_config": model_config.to_dict(),
        "backend": tcfg.backend, "device": device, "threads": getattr(engine, "threads", None),
        "batches": {"split": "val", "eval_iters": tcfg.eval_iters, "batch_size": B, "block_size": T,
                    "seed": tcfg.seed},
        "logged_val_loss": ckpt.state.get("val_loss"),
        "depths": rows, "skipped": skipped, "fit": fit,
    }


# ---------------------------------------------------------------------- the fit
def saturating_exp(T, L_inf, A, tau):
    """L(T) = L_inf + A exp(-T / tau)."""
    return L_inf + A * np.exp(-np.asarray(T, dtype=np.float64) / tau)


def fit_depth_curve(depths, losses, rise_tol: float = RISE_TOL) -> dict:
    """Fit L(T) = L_inf + A exp(-T / tau) to (depth, loss) points, or say why not (the rules
    of the module docstring). Returns {"fitted": bool, "reason": str or None, and when
    fitted "L_inf", "A", "tau", "stderr": {...}, "rms_residual", "residuals"}."""
    from scipy.optimize import OptimizeWarning, curve_fit

    order = np.argsort(depths)
    T = np.asarray(depths, dtype=np.float64)[order]
    L = np.asarray(losses, dtype=np.float64)[order]
    no = lambda reason: {"fitted": False, "reason": reason}  # noqa: E731
    if len(T) < MIN_FIT_DEPTHS:
        return no(f"{len(T)} depth{'s' if len(T) != 1 else ''}: the 3 parameters need at least "
                  f"{MIN_FIT_DEPTHS} (pass more --n_loops)")
    if not np.isfinite(L).all():
        return no("a loss is not finite: " + ", ".join(f"{t:g}: {v}" for t, v in zip(T, L) if not np.isfinite(v)))
    low = int(np.argmin(L))
    if L.max() - L[low] <= FLAT_TOL:
        return no(f"the curve is flat: every loss is within {FLAT_TOL} nats of the lowest, {L[low]:.6f}")
    if L[-1] - L[low] > rise_tol:
        return no(f"the curve rises: the loss at the deepest depth, {T[-1]:g} loops, is {L[-1]:.4f}, above the "
                  f"lowest ({L[low]:.4f} at {T[low]:g} loops) by more than rise_tol={rise_tol}")
    p0 = _initial_guess(T, L)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # an unidentifiable covariance: reported as None
            params, cov = curve_fit(saturating_exp, T, L, p0=p0, bounds=([-np.inf, -np.inf, 1e-6], np.inf),
                                    maxfev=10_000)
    except (RuntimeError, ValueError) as e:
        return no(f"curve_fit did not converge: {e}")
    L_inf, A, tau = (float(p) for p in params)
    if A <= 0:
        return no(f"the fit converged to A = {A:.4g} <= 0: the curve does not decay")
    residuals = L - saturating_exp(T, *params)
    errors = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else [math.nan] * 3
    if not np.all(np.isfinite(errors)) or errors[1] > A or errors[2] > tau:
        return no(f"the depths do not determine the fit (A = {A:.3g} ± {errors[1]:.2g} nats, tau = {tau:.3g} ± "
                  f"{errors[2]:.2g} loops): the loss has saturated by the smallest depth, {T[0]:g} loop"
                  f"{'s' if T[0] != 1 else ''}; read the curve as flat at L = {L[-1]:.4f}")
    return {"fitted": True, "reason": None, "L_inf": L_inf, "A": A, "tau": tau,
            "stderr": {k: (float(v) if math.isfinite(v) else None) for k, v in zip(("L_inf", "A", "tau"), errors)},
            "rms_residual": float(np.sqrt(np.mean(residuals ** 2))),
            "residuals": [float(r) for r in residuals]}


def loops_to_saturate(A, tau, eps) -> int:
    """The fewest loops T >= 1 whose fitted gain left, A exp(-T / tau), is at most ``eps`` nats:
    how deep to run a model whose depth curve is L(T) = L_inf + A exp(-T / tau) to come within
    ``eps`` of its L_inf (chapter 10). A, tau and eps must be positive."""
    if not (A > 0 and tau > 0 and eps > 0):
        raise ValueError(f"loops_to_saturate(A={A}, tau={tau}, eps={eps}): all three must be positive")
    T = math.ceil(tau * math.log(A / eps) - 1e-9)  # A exp(-T / tau) <= eps  <=>  T >= tau ln(A / eps)
    return max(1, T)  # a model runs at least one loop


def _initial_guess(T, L) -> list[float]:
    """p0 for curve_fit: for each tau on a grid the model is linear in (L_inf, A), so least
    squares gives them exactly; the tau of the smallest squared error wins."""
    best = None
    for tau in np.geomspace(0.1, 10 * T[-1], 64):
        X = np.stack([np.ones_like(T), np.exp(-T / tau)], axis=1)  # (n, 2): L = X @ [L_inf, A]
        coef, *_ = np.linalg.lstsq(X, L, rcond=None)
        sse = float(np.sum((X @ coef - L) ** 2))
        if best is None or sse < best[0]:
            best = (sse, [float(coef[0]), float(coef[1]), float(tau)])
    return best[1]


# ---------------------------------------------------------------------- the report
def format_report(result: dict) -> str:
    """The table and the fit that ``python -m minilooped.evaluate`` prints."""
    b = result["batches"]
    lines = [f"{result['checkpoint']} (step {result['step']}): {result['variant']} model trained at "
             f"n_loops={result['trained_n_loops']}"
             + (" (the mean of T ~ max(1, Poisson))" if result["variant"] == "parcae" else ""),
             f"val loss on {b['eval_iters']} fixed batches of {b['batch_size']}x{b['block_size']} tokens "
             f"(seed {b['seed']}), {result['backend']} on {result['device']}", "",
             f"{'n_loops':>8}  {'val loss':>9}  {'MFLOP/token':>12}  {'tokens/s':>10}"]
    for r in result["depths"]:
        mark = "*" if r["n_loops"] == result["trained_n_loops"] and result["variant"] != "gpt2" else " "
        lines.append(f"{r['n_loops']:>7}{mark}  {r['val_loss']:>9.4f}  {r['flops_per_token'] / 1e6:>12.3f}  "
                     f"{r['tokens_per_s']:>10,.0f}")
    if result["variant"] != "gpt2":
        lines.append("   * the training loop count")
    for s in result["skipped"]:
        lines.append(f"skipped n_loops={s['n_loops']}: {s['reason']}")
    fit = result["fit"]
    lines.append("")
    if fit["fitted"]:
        def pm(k):
            e = fit["stderr"][k]
            return f"{k} = {fit[k]:.4f}" + (f" ± {e:.2g}" if e is not None else " (± unknown)")
        lines += [f"fit L(T) = L_inf + A exp(-T / tau) over {len(result['depths'])} depths:",
                  f"  {pm('L_inf')} nats   {pm('A')} nats   {pm('tau')} loops",
                  f"  RMS residual {fit['rms_residual']:.2g} nats"]
    else:
        lines.append(f"no fit: {fit['reason']}")
    return "\n".join(lines)


__all__ = ["EvalConfig", "EVALUATE_USAGE", "RISE_TOL", "FLAT_TOL", "eval_config_from_cli", "find_checkpoint",
           "depths_for", "evaluate_depths", "saturating_exp", "fit_depth_curve", "loops_to_saturate", "format_report"]
