"""The dry run: ``python -m minilooped.train owt-gpt2-124m --dry_run=true --gpu=h100``.

Before renting GPUs, check on the CPU that a run's config works end to end: the real
model of the preset (every parameter), the data pipeline, two optimizer steps made as
the loop makes them (loop.py), one evaluation, and then the plan of the real run
(plan.py): tokens, memory per GPU, time and cost on ``--gpu``. Nothing is written to
the run's folder: no checkpoint, no metrics.

What the dry run changes, so that it takes seconds on a laptop's CPU:

- the data: for ``dataset="openwebtext"`` a tiny sample in OpenWebText's parquet layout
  (data/owt.py, ``write_sample_parquet``), prepared once by the real preparation
  (nanoGPT's split and seed, GPT-2 tokens, ``<|endoftext|>`` after each document) into
  ``<cache>/openwebtext_sample``; any other dataset is its own (Shakespeare is prepared
  on first use);
- the device: the CPU, float32, eager (autocast, torch.compile and fused AdamW are the
  GPU's; the CuPy core runs as NumPy);
- the batch: one micro-batch of 1 x DRY_RUN_TOKENS tokens per step. The model keeps its
  block_size (its position table is the real one); the plan uses the configured batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import shutil
import time
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import get_batch
from ..optim.lr_schedule import warmup_cosine
from . import ddp
from .config import ConfigError, TrainConfig
from .mfu import flops_per_token
from .plan import Plan, format_plan, make_plan
from .run_data import _lock, cache_root, load_run_data

DRY_RUN_STEPS = 2
DRY_RUN_TOKENS = 64  # tokens per sequence: a 124M model's step then takes ~1 s on one core


@dataclass
class DryRun:
    cfg: TrainConfig  # the config as given (the plan's)
    plan: Plan
    losses: list  # the training loss of each step
    val_loss: float
    seconds: float  # the whole dry run, sample preparation included
    text: str  # what was printed

    @property
    def result(self):
        """As loop.train returns it (nothing was saved)."""
        from .loop import TrainResult, run_dir_of

        return TrainResult(run_dir_of(self.cfg), DRY_RUN_STEPS, self.losses[-1], self.val_loss, None,
                           self.seconds, None)


def sample_dir() -> Path:
    return cache_root() / "openwebtext_sample"


def ensure_owt_sample(log=print) -> Path:
    """The prepared OpenWebText sample (train.bin, val.bin, meta.json), made once."""
    out = sample_dir()
    if (out / "meta.json").is_file():
        return out
    try:
        import datasets  # noqa: F401  (the preparation reads parquet through it)
    except ImportError:
        raise ConfigError("the dry run prepares its OpenWebText sample with the real preparation, which needs "
                          "Hugging Face datasets: pip install -e '.[data]'") from None
    from ..data.owt import prepare_openwebtext, write_sample_parquet

    with _lock(out):
        if not (out / "meta.json").is_file():
            log(f"preparing the OpenWebText sample in {out} (once)")
            parquet = write_sample_parquet(out / "parquet" / "sample.parquet")
            with contextlib.redirect_stdout(io.StringIO()):  # its per-split counts; meta.json has them
                prepare_openwebtext(parquet, out, num_proc=1, num_shards=4, cache_dir=out / "hf_cache")
            shutil.rmtree(out / "hf_cache", ignore_errors=True)
    return out


def dry_run(cfg: TrainConfig, log=print) -> DryRun:
    """Build, step twice on the CPU, print the plan (module docstring). Raises on any problem
    the real run would meet in its first steps: a bad config, data, model or divergence."""
    from .loop import TrainingDiverged, make_engine

    t0 = time.perf_counter()
    if ddp.launched_by_torchrun():
        raise ConfigError("the dry run is one process on the CPU: run it with python, not torchrun")
    lines = []

    def say(s=""):
        lines.append(s)
        log(s)

    data_dir = str(ensure_owt_sample(log)) if cfg.dataset == "openwebtext" else cfg.data_dir
    cpu = dataclasses.replace(cfg, dry_run=False, data_dir=data_dir, device="cpu", dtype="float32", compile=False,
                              fused_adamw=None, backend="numpy" if cfg.backend == "cupy" else cfg.backend,
                              batch_size=1, grad_accum=1, progress=False)
    preset = cpu.model_config()
    data = load_run_data(cpu, preset.block_size, log=log)
    model_config = cpu.model_config(vocab_size=data.meta["vocab_size"])
    data.check_vocab(model_config.vocab_size)
    dist = ddp.DistInfo(device="cpu")
    engine = make_engine(cpu, model_config, dist)
    named = engine.named_numels()
    T = min(DRY_RUN_TOKENS, model_config.block_size)
    say(f"dry run of {cfg.name or 'the config'}: the real {model_config.variant} model ({engine.name} on the CPU, "
        f"float32), data {data.data_dir}, {DRY_RUN_STEPS} steps of 1 x {T} tokens")

    data_rng, loop_rng = np.random.default_rng([cfg.seed, 0]), np.random.default_rng([cfg.seed, 1])
    losses = []
    for step in range(DRY_RUN_STEPS):  # one step of loop.py, at the dry run's batch
        lr = warmup_cosine(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.decay_iters)
        n_loops = engine.raw_model.sample_loops(loop_rng, 1) if model_config.variant == "parcae" else None
        x, y = get_batch(data.train, 1, T, data_rng)
        engine.forward_backward(x, y, n_loops, scale=1.0, sync=True)
        loss = engine.collect_loss(dist)
        norm = engine.clip_grad_norm(cfg.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise TrainingDiverged(f"dry run step {step}: loss {loss}, gradient norm {norm}")
        engine.optimizer_step(lr)
        losses.append(loss)
        say(f"  step {step}: loss {loss:.4f} (ln V = {math.log(model_config.vocab_size):.4f}), "
            f"gradient norm {norm:.3f}, lr {lr:.2e}")
    val_loss = engine.eval_loss([get_batch(data.val, 1, T, np.random.default_rng([cfg.seed, 2]))])
    engine.close()
    say(f"  val loss {val_loss:.4f} on one batch")

    plan = make_plan(cfg, model_config, named, flops_per_token(model_config, named))
    say()
    say(format_plan(plan, cfg, model_config))
    if cfg.description:
        say()
        say("about this run (from its config):")
        say(textwrap.fill(cfg.description, width=100, initial_indent="  ", subsequent_indent="  "))
    seconds = time.perf_counter() - t0
    say()
    say(f"dry run passed in {seconds:.1f} s; nothing was written to the run folder")
    return DryRun(cfg, plan, losses, val_loss, seconds, "\n".join(lines))


__all__ = ["dry_run", "DryRun", "ensure_owt_sample", "sample_dir", "DRY_RUN_STEPS", "DRY_RUN_TOKENS"]
