"""The training loop, the same for the NumPy core and the PyTorch mirror.

One optimizer step (nanoGPT's train.py, step by step):

    lr    = warmup_cosine(step)                    linear warmup, then cosine to min_lr
    for each of grad_accum micro-batches:          gradient accumulation
        x, y  = get_batch(train, B, T, data_rng)   the same numbers for both engines
        grad += d loss(x, y) / d params / grad_accum
    norm  = clip_grad_norm(grad_clip)              global-norm clipping
    stop if loss or norm is NaN or infinite        the last good checkpoint stays
    AdamW step (weight decay on 2-D weights only)

Every eval_interval steps the train and val losses are estimated on eval_iters fixed
batches (a generator seeded afresh each time, so every estimate uses the same batches
and training batches do not depend on when evaluation happens), and a checkpoint is
saved. With ``eval_loops`` (looped models) the val loss is also taken at those loop
counts, on the same batches (``val_loss_loops`` in the eval record). Batches, Parcae's
loop counts and the engines' own generators (dropout) all come from seeded generators
whose states go into the checkpoint: a resumed run continues exactly as if it had never
stopped.

The engine (engine_core.py or engine_torch.py) does the arithmetic; this file never
touches an array of the model.
"""
from __future__ import annotations

import math
import platform
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backend
from ..data import get_batch
from ..optim.lr_schedule import warmup_cosine
from . import ddp
from .checkpoint import (check_compatible, flatten_optimizer, latest_checkpoint, list_checkpoints,
                         load_checkpoint, save_checkpoint, unflatten_optimizer)
from .config import ConfigError, TrainConfig
from .metrics import MetricsLogger, truncate_after
from .mfu import device_peak_flops, flops_per_token, format_mfu, mfu, training_flops_per_token
from .run_data import load_run_data, uniform_loss


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    train_loss: float | None  # the last step's training loss
    val_loss: float | None  # the last evaluation
    unigram_entropy: float | None
    elapsed: float  # seconds of this process, setup excluded
    checkpoint: Path | None


def make_engine(cfg: TrainConfig, model_config, dist):
    if cfg.backend == "torch":
        from .engine_torch import TorchEngine  # torch is imported only when asked for

        return TorchEngine(cfg, model_config, dist)
    from .engine_core import CoreEngine

    return CoreEngine(cfg, model_config, dist)


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path("runs") / (cfg.name or "run")


def train(cfg: TrainConfig) -> TrainResult:
    """Train as ``cfg`` says; returns the final losses. Raises TrainingDiverged on NaN/inf."""
    cfg.validate()
    backend.tune_allocator()  # malloc keeps freed blocks for the next step's temporaries (backend.py)
    if cfg.dry_run:  # 2 CPU steps and the plan, nothing saved (dry_run.py)
        from .dry_run import dry_run

        return dry_run(cfg).result
    if ddp.launched_by_torchrun() and cfg.backend != "torch":
        raise ConfigError("torchrun started this run but backend is "
                          f"{cfg.backend!r}: distributed training needs --backend=torch")
    dist = ddp.setup(cfg.resolved_device()) if cfg.backend == "torch" else ddp.DistInfo(device=cfg.resolved_device())
    try:
        if cfg.backend == "torch":
            from .engine_torch import flushed_subnormals

            with flushed_subnormals(dist.device):
                return _train(cfg, dist)
        return _train(cfg, dist)
    finally:
        ddp.cleanup(dist)


def _train(cfg: TrainConfig, dist: ddp.DistInfo) -> TrainResult:
    say = print if dist.is_main else (lambda *a, **k: None)
    if cfg.grad_accum % dist.world_size:
        raise ConfigError(f"grad_accum={cfg.grad_accum} must be a multiple of the {dist.world_size} processes: "
                          "each process takes grad_accum / WORLD_SIZE micro-batches per step")
    run_dir = run_dir_of(cfg)

    # ---------------------------------------------------------------- data and model
    preset = cfg.model_config()  # validates the model before any data work
    data = load_run_data(cfg, preset.block_size, log=say)
    model_config = cfg.model_config(vocab_size=data.meta["vocab_size"])
    data.check_vocab(model_config.vocab_size)
    B, T = cfg.batch_size, model_config.block_size
    engine = make_engine(cfg, model_config, dist)
    if cfg.init_from:
        from ..io import load_safetensors

        engine.load_weights(load_safetensors(cfg.init_from))
    numels = engine.named_numels()
    n_params = sum(n for name, n in numels if not name.startswith("transformer.wpe"))
    flops_tok = flops_per_token(model_config, numels)  # Parcae: the expectation over its loop counts
    peak = device_peak_flops(engine.device_name(), engine.precision())

    data_rng = np.random.default_rng([cfg.seed, 0])  # training batches
    loop_rng = np.random.default_rng([cfg.seed, 1])  # Parcae's training loop counts
    start_step, tokens, elapsed_before, val_loss = 0, 0, 0.0, None

    # ---------------------------------------------------------------- resume or start
    metrics_path = run_dir / "metrics.jsonl"
    if cfg.resume:
        ckpt = load_checkpoint(run_dir)
        check_compatible(ckpt, model_config.to_dict(), data.describe())
        _restore(ckpt, engine, data_rng, loop_rng, say, dist)
        start_step, tokens = ckpt.step, ckpt.state["tokens"]
        elapsed_before, val_loss = ckpt.state.get("elapsed", 0.0), ckpt.state.get("val_loss")
        changed = {k: (v, getattr(cfg, k)) for k, v in ckpt.state.get("train_config", {}).items()
                   if k not in ("resume", "progress") and hasattr(cfg, k) and getattr(cfg, k) != v}
        if changed:
            say("note: resuming with changed settings: "
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        if dist.is_main:
            truncate_after(metrics_path, start_step)
        say(f"resuming {run_dir} from {ckpt.path.name} (step {start_step})")
    elif dist.is_main and (list_checkpoints(run_dir) or metrics_path.exists()):
        say(f"note: {run_dir} holds an earlier run; starting a new one replaces its checkpoints and "
            "metrics (pass --resume to continue it instead)")
        for old in list_checkpoints(run_dir):
            shutil.rmtree(old, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    last_ckpt = latest_checkpoint(run_dir) if cfg.resume else None

    logger = MetricsLogger(metrics_path, enabled=dist.is_main)
    baseline = {"unigram_entropy": data.unigram_entropy, "uniform_loss": uniform_loss(model_config.vocab_size)}
    if start_step == 0:
        logger.log("start", config=cfg.to_dict(), model_config=model_config.to_dict(), params=n_params,
                   flops_per_token=flops_tok, engine=engine.name, device=engine.device_name(),
                   world_size=dist.world_size, data=data.describe(), **baseline, machine=_machine())
        say(f"{cfg.name or 'run'}: {model_config.variant} model, {n_params / 1e6:.2f}M parameters, "
            f"{engine.name} on {engine.device_name()}, {B}x{T} tokens x {cfg.grad_accum} micro-batches per step")
        if data.unigram_entropy is not None:
            say(f"baselines: unigram entropy of the train tokens {data.unigram_entropy:.4f} nats/token, "
                f"uniform ln(V) {baseline['uniform_loss']:.4f}")
    else:
        logger.log("resume", step=start_step)

    # ---------------------------------------------------------------- the loop
    tokens_per_step = B * T * cfg.grad_accum
    local_accum = cfg.grad_accum // dist.world_size
    is_parcae = model_config.variant == "parcae"
    bar = _progress(cfg, start_step, dist)
    t_start = time.perf_counter()
    elapsed = lambda: elapsed_before + time.perf_counter() - t_start  # noqa: E731
    step, loss, tok_s = start_step, None, None

    def save(step):  # every rank calls it: rank 0 gathers every rank's generators
        nonlocal last_ckpt
        engine_states = ddp.all_gather_object(engine.engine_state(), dist)
        if not dist.is_main:
            return
        arrays, meta = flatten_optimizer(engine.optimizer_state(), engine.param_names())
        state = {"train_config": cfg.to_dict(), "model_config": model_config.to_dict(), "data": data.describe(),
                 "engine": engine.name, "tokens": tokens, "elapsed": elapsed(), "val_loss": val_loss,
                 "rng": {"data": data_rng.bit_generator.state, "loops": loop_rng.bit_generator.state},
                 "engine_state": engine_states[0], "engine_states": engine_states}
        last_ckpt = save_checkpoint(run_dir, step, engine.weights(), arrays, meta, state, keep=cfg.keep_checkpoints)

    def diverged(what, value, step):
        bar.close()
        logger.log("diverged", step=step, what=what, value=str(value))
        logger.close()
        where = (f"the last good checkpoint is {last_ckpt} (step {int(last_ckpt.name.split('_')[1])}); "
                 "resume from it with --resume" if last_ckpt else "no checkpoint was saved yet")
        raise TrainingDiverged(
            f"training diverged at step {step}: the {what} is {value}. The update was not applied; {where}. "
            f"Try a lower learning_rate (now {cfg.learning_rate}), "
            + (f"a smaller grad_clip (now {cfg.grad_clip}), " if cfg.grad_clip > 0 else "gradient clipping "
               "(e.g. --grad_clip=1.0), ")
            + f"a longer warmup (now {cfg.warmup_iters} steps)"
            + (" or dtype=float32." if cfg.dtype != "float32" else "."))

    while True:
        last = step == cfg.max_iters
        resumed_here = cfg.resume and step == start_step
        evaluating = (step % cfg.eval_interval == 0 or last) and not resumed_here
        if evaluating and dist.is_main:
            losses = estimate_loss(engine, data, cfg, B, T)
            val_loss = losses["val"]
            by_depth = {"val_loss_loops": val_loss_at_depths(engine, data, cfg, B, T)} if cfg.eval_loops else {}
            logger.log("eval", step=step, train_loss=losses["train"], val_loss=losses["val"], tokens=tokens,
                       elapsed=elapsed(), **by_depth)
            bar.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                      + "".join(f", {n} loops {v:.4f}" for n, v in by_depth.get("val_loss_loops", {}).items()))
            if not math.isfinite(val_loss):
                diverged("val loss", val_loss, step)
        if step > start_step and (evaluating and (cfg.ckpt_interval == 0 or last)
                                  or cfg.ckpt_interval and step % cfg.ckpt_interval == 0):
            save(step)  # on every rank (the generators are gathered)
        if last:
            break

        lr = warmup_cosine(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.decay_iters)
        n_loops = engine.raw_model.sample_loops(loop_rng, B) if is_parcae else None  # int or (B,)
        t0 = time.perf_counter()
        done = 0
        for micro in range(cfg.grad_accum):
            x, y = get_batch(data.train, B, T, data_rng)  # every rank draws every micro-batch...
            if micro % dist.world_size != dist.rank:
                continue  # ...and keeps its own: the batches of a 1-process run, split
            done += 1
            engine.forward_backward(x, y, n_loops, scale=1.0 / local_accum, sync=done == local_accum)
        loss = engine.collect_loss(dist)
        grad_norm = engine.clip_grad_norm(cfg.grad_clip)
        if not math.isfinite(loss):
            diverged("training loss", loss, step)
        if not math.isfinite(grad_norm) and not engine.skips_nonfinite_steps:
            diverged("gradient norm", grad_norm, step)
        engine.optimizer_step(lr)
        dt = time.perf_counter() - t0
        tokens += tokens_per_step
        tok_s = tokens_per_step / dt
        step_flops = training_flops_per_token(model_config, numels, n_loops) if is_parcae else flops_tok  # its T
        if step % cfg.log_interval == 0:
            record = dict(step=step, loss=loss, lr=lr, grad_norm=grad_norm, tokens=tokens, dt_ms=1000 * dt,
                          tok_per_s=tok_s, mfu=mfu(step_flops, tok_s, peak), elapsed=elapsed())
            if is_parcae:  # the loop count, or with one per sequence their mean; and the longest
                record["n_loops"] = n_loops if isinstance(n_loops, int) else float(np.mean(n_loops))
                record["n_loops_max"] = int(np.max(n_loops))
            logger.log("train", **record)
        bar.update(1)
        bar.set_postfix_str(f"loss {loss:.4f}, {tok_s:,.0f} tok/s, MFU {format_mfu(mfu(step_flops, tok_s, peak))}",
                            refresh=False)
        step += 1

    bar.close()
    engine.close()
    logger.log("end", step=step, train_loss=loss, val_loss=val_loss, tokens=tokens, elapsed=elapsed(),
               checkpoint=str(last_ckpt) if last_ckpt else None)
    logger.close()
    if data.unigram_entropy is not None and val_loss is not None:
        say(f"done: val loss {val_loss:.4f} vs unigram entropy {data.unigram_entropy:.4f} nats/token "
            f"({elapsed():.0f} s)")
    return TrainResult(run_dir, step, loss, val_loss, data.unigram_entropy, elapsed(), last_ckpt)


def estimate_loss(engine, data, cfg, B: int, T: int) -> dict:
    """Mean loss over eval_iters batches of each split. The generator is seeded afresh every
    time, so every estimate uses the same batches (comparable along the run) and evaluating
    never changes the training batches."""
    losses = {}
    for split, ds in (("train", data.train), ("val", data.val)):
        losses[split] = engine.eval_loss(eval_batches(ds, cfg.seed, B, T, cfg.eval_iters))
    return losses


def eval_batches(ds, seed: int, B: int, T: int, n: int) -> list:
    """The ``n`` fixed evaluation batches (x, y) of a split: a generator seeded afresh."""
    rng = np.random.default_rng([seed, 2])
    return [get_batch(ds, B, T, rng) for _ in range(n)]


def val_loss_at_depths(engine, data, cfg, B: int, T: int) -> dict:
    """{"n": val loss at n loops} for each loop count of ``cfg.eval_loops``, on the val batches
    of estimate_loss. The engine's generators (Parcae's h_0, the threads' seeds) are put back
    afterwards, so that logging more depths never changes the training run."""
    batches = eval_batches(data.val, cfg.seed, B, T, cfg.eval_iters)
    state = engine.engine_state()
    losses = {str(n): engine.eval_loss(batches, n_loops=n) for n in cfg.eval_depths()}
    engine.load_engine_state(state)
    return losses


def _restore(ckpt, engine, data_rng, loop_rng, say, dist) -> None:
    """Put the checkpoint's weights, optimizer state and generator states back in place;
    under DDP each rank takes back its own engine generators (dropout)."""
    engine.load_weights(ckpt.weights)
    engine.load_optimizer_state(unflatten_optimizer(ckpt.optimizer["arrays"], ckpt.optimizer, engine.param_names()))
    if ckpt.state.get("engine") == engine.name:
        states = ckpt.state.get("engine_states") or [ckpt.state.get("engine_state", {})]
        if len(states) != dist.world_size:
            say(f"note: the checkpoint holds the random generators of {len(states)} process(es), this run has "
                f"{dist.world_size}: ranks without their own take rank 0's, so dropout masks differ from an "
                "uninterrupted run")
        engine.load_engine_state(states[dist.rank] if dist.rank < len(states) else states[0])
    else:
        say(f"note: the checkpoint was made by the {ckpt.state.get('engine')} engine; its random generators "
            f"(dropout) do not carry over to {engine.name}")
    data_rng.bit_generator.state = ckpt.state["rng"]["data"]
    loop_rng.bit_generator.state = ckpt.state["rng"]["loops"]


class _NoBar:
    def update(self, n=1): pass
    def set_postfix_str(self, *a, **k): pass
    def write(self, s): print(s)
    def close(self): pass


class _SilentBar(_NoBar):
    def write(self, s): pass


def _progress(cfg, start_step, dist):
    if not dist.is_main:
        return _SilentBar()
    if not cfg.progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=cfg.max_iters, initial=start_step, desc=cfg.name or "train", unit="step",
                dynamic_ncols=True, file=sys.stderr)


def _machine() -> dict:
    import os

    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": _cpu_model(), "cpus": os.cpu_count()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


__all__ = ["train", "TrainResult", "TrainingDiverged", "make_engine", "run_dir_of", "estimate_loss", "eval_batches",
           "val_loss_at_depths"]
