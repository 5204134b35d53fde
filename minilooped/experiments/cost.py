"""What a study costs on 2 CPU cores, estimated before running it.

One optimizer step costs a fixed overhead plus a time per training FLOP (minilooped.training.mfu:
6 N_applied + 12 L H Q T per token), fitted per family to steps measured on 2 cores with the
NumPy core (median of 35 steps of 16 x 64 tokens, 128 wide; 2026-12-06, machine shared with
other jobs, load 1-3):

    model (shipped config)                  MFLOP/token   ms/step   fitted
    gpt2, 1 block (shakespeare-gpt2-lite)        1.35        21.1      20.5
    gpt2, 4 blocks (shakespeare-gpt2)            5.21        48.6      50.7
    loop_residual 1 x 4 (the default)            5.21        77.8      71.0
    loop_residual 1 x 12                        15.52       138.7     191.6
    contractive 1 x 4                            5.21        83.8      71.0
    parcae 1 + 1 x 4 + 1                         8.29       104.5     107.0
    fully_looped 1 x 6                           7.79       152.7     152.6

    ms/step = 10 + k * MFLOP/token * tokens/1024,  k = 7.8 (gpt2), 18.3 (fully looped), 11.7 (others)

Looped models run slower per FLOP than plain GPT-2 in the core (their backward sums the
shared weights' gradients over loops; the fully looped model adds its injection
attention), hence three families. The PyTorch mirror takes about half the time
(39.4 against 81.7 ms/step for the default model in book/data/training/default_summary.json).
An evaluation batch is a forward pass, a third of a step; the estimate adds the
evaluations during training, the depth measurements and a few seconds of set-up per run.
Checked on study shapes, each timed between two runs of the default model so that the
machine's load cancels (ratio of ms/step to the default's, measured / estimated): loop_residual
1 x 12: 2.96 / 2.70; fully looped LT 2 x 6, 64 wide: 1.46 / 1.23; recursive 2 x 2 with LoRA
rank 32: 1.59 / 1.27; gpt2 8 blocks: 2.10 / 1.28; loop_residual 2 x 2: 1.12 / 1.00; parcae:
1.32 / 1.51; gpt2 1 block: 0.31 / 0.29. So the estimate is a guide, up to ~40% low; and it
cannot foresee subnormal gradients (fully looped FLT at 12 loops: 14.8 / 2.31, see
studies.py). A study's real wall time is in its summary, beside this estimate.
"""
from __future__ import annotations

from functools import lru_cache

OVERHEAD_MS = 10.0  # per step: Python, the optimizer, the data
MS_PER_MFLOP = {"gpt2": 7.8, "fully_looped": 18.3}  # per MFLOP/token at 1024 tokens a step
MS_PER_MFLOP_LOOPED = 11.7  # loop_residual, contractive, parcae, recursive
BACKEND_FACTOR = {"numpy": 1.0, "cupy": 1.0, "torch": 0.5}  # cupy on a GPU: not estimated, as numpy
SETUP_S = 3.0  # per run: data, engine, checkpoints, provenance
CHAR_VOCAB = 80  # the characters of the prepared Shakespeare (meta.json), when it is not prepared yet


def step_ms(mc, tokens: int, backend: str = "numpy") -> float:
    """Estimated milliseconds of one optimizer step of model config ``mc`` on ``tokens`` tokens."""
    k = MS_PER_MFLOP.get(mc.variant, MS_PER_MFLOP_LOOPED)
    return BACKEND_FACTOR.get(backend, 1.0) * (OVERHEAD_MS + k * _flops(mc) / 1e6 * tokens / 1024)


def job_seconds(cfg, measurements=()) -> float:
    """Estimated seconds of one training run of ``cfg`` and its depth measurements."""
    mc = cfg.model_config(vocab_size=_vocab(cfg))
    tokens = cfg.batch_size * mc.block_size
    step = step_ms(mc, tokens * cfg.grad_accum, cfg.backend) / 1000
    forward = step_ms(mc, tokens, cfg.backend) / 1000 / 3
    evals = (cfg.max_iters // cfg.eval_interval + 1) * 2 * cfg.eval_iters * forward
    depth = 0.0
    for spec in measurements:
        if not isinstance(spec, str) and spec[0] in ("val_loss_by_loops", "depth_fit") and mc.variant != "gpt2":
            for k in spec[1].get("loops", ()):
                depth += cfg.eval_iters * step_ms(mc.replace(n_loops=k), tokens, cfg.backend) / 1000 / 3
    return SETUP_S + cfg.max_iters * step + evals + depth


def study_seconds(jobs) -> float:
    return sum(job_seconds(j.cfg, j.study.measurements) if j.cfg is not None else SETUP_S for j in jobs)


def estimate(study):
    """(seconds, jobs, stand-ins): the full study's estimated cost. A run that needs a config
    field or value this version does not have yet (see studies.py) is estimated without it, as
    the nearest existing model (the same cost within the estimate's accuracy); those runs are
    the stand-ins."""
    import dataclasses

    from ..models.config import INJECTIONS, GPTConfig
    from ..training import TrainConfig
    from .runner import plan, unavailable_runs  # the runner imports this file

    known = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(GPTConfig)}
    missing = unavailable_runs(study)
    runs = []
    for run in study.runs:
        if run.label in missing:
            over = {k: v for k, v in run.overrides.items() if k in known}
            if over.get("injection", "attention") not in INJECTIONS:
                over["injection"] = "attention"
            run = dataclasses.replace(run, overrides=over)
        runs.append(run)
    jobs = plan(dataclasses.replace(study, runs=tuple(runs)))
    return study_seconds(jobs), jobs, list(missing)


def _vocab(cfg) -> int:
    import json

    from ..training.run_data import default_data_dir

    meta = default_data_dir(cfg) / "meta.json" if not cfg.data_dir else None
    if meta is not None and meta.is_file():
        return json.loads(meta.read_text())["vocab_size"]
    return {"char": CHAR_VOCAB, "bpe": cfg.bpe_vocab_size}.get(cfg.tokenizer, 50257)


def _flops(mc) -> float:
    return _flops_cached(tuple(sorted((k, v) for k, v in mc.to_dict().items() if k != "name")))


@lru_cache(maxsize=None)
def _flops_cached(items) -> float:
    from ..models import GPT, GPTConfig
    from ..training.mfu import flops_per_token

    mc = GPTConfig(**dict(items))
    model = GPT(mc)  # a few ms for the course's models: only the parameter shapes are used
    return flops_per_token(mc, [(n, p.numel()) for n, p in model.named_parameters()])


def format_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


__all__ = ["step_ms", "job_seconds", "study_seconds", "estimate", "format_seconds"]
