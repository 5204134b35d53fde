"""The plan of a run: tokens, memory per GPU, time and cost, before any GPU is rented.

The dry run (``python -m minilooped.train owt-gpt2-124m --dry_run=true --gpu=h100``,
see dry_run.py) prints it. Every number is arithmetic on the config; none is measured.

Tokens. One optimizer step takes ``batch_size x block_size x grad_accum`` tokens
(grad_accum counts micro-batches over all GPUs, see ddp.py); the run takes max_iters steps.

Memory per GPU. DDP keeps a whole copy of the model on every GPU:

    weights      4 N bytes   float32 master weights (autocast casts them per op)
    gradients    4 N bytes   float32
    AdamW        8 N bytes   m and v, float32
    activations  per stored block application (Korthikanti et al. 2022, arXiv 2205.05198, eq. 2):
                     B T C (34 + 5 H T / C) bytes at 16-bit precision (x2 in float32);
                 the 5 H T / C term is the T x T attention scores and their dropout
                 mask, which scaled_dot_product_attention's flash and memory-efficient
                 kernels never store: on a GPU the 34 B T C part is what counts. A looped
                 model stores one copy per application that gets gradients: every
                 application, except Parcae's loops run without gradients (only the
                 last backprop_loops of them are differentiated).
    logits       B T V (2 + 4 + 4) bytes: the bf16 logits, the float32 copy the
                 cross-entropy makes, and its float32 log-softmax kept for the backward
                 (4 + 4 in float32); once per loss head (the fully looped model may
                 take the loss on several loops).

N counts every parameter once (tied ones once). Not counted: the CUDA context
(~0.5 GB), the allocator's slack and torch.compile's workspace; leave 10-20% free.

Time. With F FLOPs per token (mfu.flops_per_token: 6 N + 12 L H Q T per application with
gradient, a third of that per no-grad loop) the step takes

    t_step = tokens_per_step x F / (n_gpus x peak x MFU)

at an assumed MFU (default 40%: bf16 and torch.compile on one node; nanoGPT's own
GPT-2 124M run, 295B tokens in ~4 days on 8 A100 40GB, works out at ~30%, llm.c's CUDA
at ~50-60%). Evaluation runs on rank 0 alone, forward only (F / 3 per token) over
2 x eval_iters micro-batches every eval_interval steps; the plan adds it. Cost =
wall hours x n_gpus x $ per GPU-hour, at the price in GPUS (on-demand cloud prices of
late 2025, rounded; they vary by provider: set --gpu_price to yours).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .mfu import PEAK_FLOPS, block_uses, forward_flops_per_token, precision_of


@dataclass(frozen=True)
class GPU:
    peak_key: str  # the row of mfu.PEAK_FLOPS
    memory_gb: float  # HBM / GDDR, GB (10^9 bytes) as the datasheets count it
    price: float  # assumed $ per GPU-hour (see the module docstring)


# --gpu names. Peak FLOP/s come from mfu.PEAK_FLOPS (one table for the plan and the log).
GPUS = {
    "h100": GPU("H100 SXM", 80, 3.00),
    "h100-pcie": GPU("H100 PCIe", 80, 2.50),
    "h200": GPU("H200", 141, 3.80),
    "a100-80gb": GPU("A100", 80, 1.80),
    "a100-40gb": GPU("A100", 40, 1.30),
    "l4": GPU("L4", 24, 0.80),
    "rtx4090": GPU("RTX 4090", 24, 0.50),
}
GPU_NAMES = tuple(GPUS)

# Korthikanti et al. 2022 (arXiv 2205.05198), eq. 2: bytes per block application at 16-bit
# activations are s b h (34 + 5 a s / h); s = T, b = B, h = C, a = H.
_KORTHIKANTI_LINEAR = 34
_KORTHIKANTI_SCORES = 5


def stored_applications(config) -> int:
    """Block applications whose activations are kept for the backward pass."""
    if config.variant == "parcae":  # the loops before the last backprop_loops run under no_grad
        loops = min(config.n_loops, config.backprop_loops)
        return config.n_prelude + config.n_coda + config.n_recurrent * loops
    return sum(block_uses(config))


def loss_heads(config) -> int:
    """How many times the head and the cross-entropy run per forward pass."""
    if config.variant == "fully_looped":
        n = config.n_loops
        return {"last": 1, "last_third": math.ceil(n / 3), "all": n}[config.loss_loops]
    return 1


def memory_per_gpu(config, n_params: int, batch_size: int, dtype: str) -> dict:
    """Bytes per GPU of weights, gradients, AdamW state and activations (module docstring).

    ``n_params``: every parameter once (the embedding too). ``dtype``: the autocast dtype."""
    B, T, C, H, V = batch_size, config.block_size, config.n_embd, config.n_head, config.vocab_size
    scale = 2 if dtype == "float32" else 1  # Korthikanti's bytes assume 16-bit activations
    apps = stored_applications(config)
    linear = apps * B * T * C * _KORTHIKANTI_LINEAR * scale  # (B, T, C) tensors kept per application
    scores = apps * B * T * C * (_KORTHIKANTI_SCORES * H * T / C) * scale  # (B, H, T, T), math kernel only
    logits = loss_heads(config) * B * T * V * ((4 + 4) if dtype == "float32" else (2 + 4 + 4))
    mem = {"weights": 4 * n_params, "gradients": 4 * n_params, "adamw": 8 * n_params,
           "activations": linear + logits, "attention_scores_if_materialised": scores,
           "stored_applications": apps}
    mem["total"] = mem["weights"] + mem["gradients"] + mem["adamw"] + mem["activations"]
    return mem


@dataclass
class Plan:
    name: str
    gpu: str
    n_gpus: int
    mfu: float
    price: float  # $ per GPU-hour used
    tokens_per_step: int
    steps: int
    total_tokens: int
    micro_batches_per_gpu: int  # per optimizer step
    params: int  # every parameter once
    flops_per_token: float
    memory: dict
    gpu_memory: float  # bytes
    peak_flops: float
    step_s: float
    tokens_per_s: float  # all GPUs together
    train_hours: float
    eval_hours: float

    @property
    def wall_hours(self) -> float:
        return self.train_hours + self.eval_hours

    @property
    def cost(self) -> float:
        return self.wall_hours * self.n_gpus * self.price

    @property
    def fits(self) -> bool:
        return self.memory["total"] <= self.gpu_memory


def plan_precision(cfg) -> str:
    """The precision the run's matmuls use: the core (NumPy/CuPy) computes in plain float32."""
    return precision_of(cfg.dtype, cfg.tf32) if cfg.backend == "torch" else "fp32"


def make_plan(cfg, model_config, named_numels, flops_per_token: float) -> Plan:
    """The plan of run ``cfg`` (a TrainConfig) for the model ``model_config`` whose parameters
    are ``named_numels``; ``flops_per_token`` from mfu.flops_per_token."""
    from .config import ConfigError

    gpu = GPUS[cfg.gpu]
    precision = plan_precision(cfg)
    peak = PEAK_FLOPS[gpu.peak_key].get(precision)
    if peak is None:
        raise ConfigError(f"the {cfg.gpu} has no {precision} peak in mfu.PEAK_FLOPS: choose another --gpu "
                          "or --dtype")
    if cfg.grad_accum % cfg.n_gpus:
        raise ConfigError(f"grad_accum={cfg.grad_accum} must be a multiple of n_gpus={cfg.n_gpus}: each GPU "
                          "takes grad_accum / n_gpus micro-batches per step")
    B, T = cfg.batch_size, model_config.block_size
    tokens_per_step = B * T * cfg.grad_accum
    rate = cfg.n_gpus * peak * cfg.plan_mfu  # achieved FLOP/s of all GPUs
    step_s = tokens_per_step * flops_per_token / rate
    n_evals = cfg.max_iters // cfg.eval_interval + 1
    eval_tokens = n_evals * 2 * cfg.eval_iters * B * T  # both splits, rank 0 alone
    eval_s = eval_tokens * forward_flops_per_token(model_config, named_numels) / (peak * cfg.plan_mfu)  # no backward
    n_params = sum(n for _, n in named_numels)
    return Plan(name=cfg.name, gpu=cfg.gpu, n_gpus=cfg.n_gpus, mfu=cfg.plan_mfu, price=cfg.gpu_price or gpu.price,
                tokens_per_step=tokens_per_step, steps=cfg.max_iters, total_tokens=tokens_per_step * cfg.max_iters,
                micro_batches_per_gpu=cfg.grad_accum // cfg.n_gpus, params=n_params,
                flops_per_token=flops_per_token, memory=memory_per_gpu(model_config, n_params, B, cfg.dtype),
                gpu_memory=gpu.memory_gb * 1e9, peak_flops=peak, step_s=step_s,
                tokens_per_s=tokens_per_step / step_s, train_hours=step_s * cfg.max_iters / 3600,
                eval_hours=eval_s / 3600)


def format_plan(plan: Plan, cfg, model_config) -> str:
    """The plan as the dry run prints it."""
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    m = plan.memory
    T = model_config.block_size
    lines = [
        f"plan of {plan.name or 'the run'}: {model_config.variant} model, {plan.params / 1e6:.2f}M parameters, "
        f"{plan.flops_per_token / 1e9:.3f} GFLOP per token (6 N + 12 L H Q T, loop-aware: no-grad loops count forward only)",
        f"  tokens per step   {cfg.batch_size} x {T} x {cfg.grad_accum} micro-batches = {plan.tokens_per_step:,} "
        f"({plan.micro_batches_per_gpu} micro-batches per GPU on {plan.n_gpus} GPU{'s' if plan.n_gpus > 1 else ''})",
        f"  steps             {plan.steps:,}",
        f"  total tokens      {plan.total_tokens:,} ({plan.total_tokens / 1e9:.2f}B; "
        f"{plan.total_tokens / max(plan.params, 1):.0f} tokens per parameter)",
        f"  memory per GPU    {gb(m['total'])} of the {cfg.gpu}'s {gb(plan.gpu_memory)}"
        + ("" if plan.fits else "  ** does NOT fit: lower --batch_size and raise --grad_accum **"),
        f"    weights {gb(m['weights'])} + gradients {gb(m['gradients'])} + AdamW {gb(m['adamw'])} (float32)",
        f"    activations {gb(m['activations'])} at micro-batch {cfg.batch_size} x {T}, {cfg.dtype}: "
        f"{m['stored_applications']} stored block applications x B T C x {68 if cfg.dtype == 'float32' else 34} bytes "
        "(Korthikanti et al. 2022) "
        f"+ logits B T V x {8 if cfg.dtype == 'float32' else 10} bytes",
        f"    (+ {gb(m['attention_scores_if_materialised'])} if attention fell back to the math kernel, which "
        "stores the T x T scores; flash does not)",
        f"  on {plan.n_gpus} x {cfg.gpu} ({GPUS[cfg.gpu].peak_key}, {plan.peak_flops / 1e12:.0f} TFLOP/s peak "
        f"{plan_precision(cfg)}) at an assumed MFU of {100 * plan.mfu:.0f}%:",
        f"    step time       " + (f"{plan.step_s:.3f} s" if plan.step_s >= 0.1 else f"{1000 * plan.step_s:.2f} ms"),
        f"    tokens/s        {plan.tokens_per_s:,.0f} ({plan.tokens_per_s / plan.n_gpus:,.0f} per GPU)",
        f"    wall time       {_hours(plan.wall_hours)} (training {_hours(plan.train_hours)} + evaluation "
        f"{_hours(plan.eval_hours)})",
        f"    cost            ${plan.cost:,.0f} at ${plan.price:.2f} per GPU-hour (an assumption: set --gpu_price)",
        "  estimates from the FLOP count and the assumed MFU, not measurements; the log's MFU column "
        "shows the real one",
    ]
    return "\n".join(lines)


def _hours(h: float) -> str:
    if h < 1:
        return f"{60 * h:.0f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} days"


__all__ = ["GPU", "GPUS", "GPU_NAMES", "Plan", "make_plan", "plan_precision", "format_plan", "memory_per_gpu",
           "stored_applications", "loss_heads"]
