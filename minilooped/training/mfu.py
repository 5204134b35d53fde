"""FLOPs per token and model FLOPs utilisation (MFU).

PaLM (Chowdhery et al. 2022, appendix B) counts the training FLOPs of a decoder as

    flops per token = 6 N + 12 L H Q T

N = non-embedding parameters (a matmul costs 2 FLOPs per weight forward and 4 backward),
L layers, H heads, Q head size, T context: the attention scores q k^T and their use on
v cost 2 * 2 * T * H * Q per layer forward, times 3 with the backward. (T counts the
whole context, as PaLM and nanoGPT do, not the causal half.)

A looped model applies some parameters several times per token. Each application costs
the same FLOPs, so here N counts every parameter once per use and L counts block
applications: Loop-Residual GPT2-45M (1 block x 2 loops) has the parameters of GPT2-45M-Lite
but ~1.16x its FLOPs (papers.md, section 1). One forward pass at n loops costs

    forward(n) = 2 (N_once + n N_loop) + 4 (L_once + n L_loop) H Q T

N_once: the parameters applied once (tied embedding/head, ln_f, prelude and coda blocks,
Parcae's ln_prelude and C); N_loop: those applied in every loop (the looped blocks,
Parcae's injection, one loop's share of the recursive model's per-depth deltas). L_once,
L_loop: the attention applications outside and in one loop. ``forward_flops_per_token``
is this count: inference, and the loss-vs-depth evaluation (evaluate.py).

Training costs 3x the forward (backward = 2x) for what runs with gradient and 1x for
what runs without: Parcae's first T - min(T, backprop_loops) loops run under no_grad,

    training(T) = 3 forward(k loops, with the once-parts) + 2 (T - k) N_loop
                  + 4 (T - k) L_loop H Q T,           k = min(T, backprop_loops)

Counting them at 6N over-reported a Parcae run's FLOPs (by ~1.3x on shakespeare-parcae).
Parcae's T is random, T ~ max(1, Poisson(n_loops)), drawn per batch or per sequence
(config.loop_sampling): ``training_flops_per_token`` takes one step's T, or its per-sequence
counts (then the mean of each sequence's count: the model's FLOPs, though the masked
batch computes every row for the longest), for the training loop's per-step MFU. Without
them, and ``flops_per_token`` always, it counts the *expectation* of the no-grad and grad
loop counts, computed exactly (``parcae_loop_counts``): the same for either sampling. Training FLOPs are linear in those counts, so the expectation
is the long-run mean FLOPs per token, which a run's FLOPs and MFU need; the mean T
(n_loops) plugged in would not be (E[min(T, k)] <= min(E[T], k), and max(1, .) adds
P(T=0)). The fully looped model's loss reads out ``loss_loops`` states, each through
ln_f and the head: training counts every readout, the forward count one (the logits).

Stated approximations: every parameter costs 2 FLOPs per use forward (biases and
LayerNorm gains included, as PaLM's N); a backward costs 2x its forward even where an
input needs no gradient; the position-embedding lookup costs nothing; the tied head is
one matmul; softmax, GELU and norms' arithmetic are not counted.

MFU = achieved FLOP/s / the device's peak. Peaks come from the vendors' datasheets
(dense, no sparsity). An unknown device, every CPU included, has no peak: MFU is
reported as unknown rather than guessed.
"""
from __future__ import annotations

import math
import numbers
import re


def block_uses(config, n_loops: int | None = None) -> list[int]:
    """How many times each unique block ``transformer.h.i`` runs per forward pass at
    ``n_loops`` loops (None: the config's)."""
    c = config
    n = c.n_loops if n_loops is None else n_loops
    if c.variant == "gpt2":
        return [1] * c.n_layer
    if c.variant in ("fully_looped", "recursive"):
        return [n] * c.n_layer
    return [n if c.loop_start <= i < c.loop_end else 1 for i in range(c.n_layer)]


def applied_parameters(config, named_numels) -> tuple[int, int]:
    """(N_once, N_loop): parameters that multiply once per forward pass, and once per loop.

    ``named_numels``: (name, number of elements) of every parameter, tied ones once, as
    ``[(n, p.numel()) for n, p in model.named_parameters()]``."""
    once_uses, loop_uses = block_uses(config, 1), block_uses(config, 2)
    n_once = n_loop = 0
    for name, numel in named_numels:
        if name.startswith("transformer.wpe"):
            continue  # a lookup, no multiply-adds
        m = re.match(r"transformer\.h\.(\d+)\.", name)
        if m:
            i = int(m.group(1))
            if loop_uses[i] != once_uses[i]:  # a block of the looped group
                n_loop += numel
            else:  # the prelude and the coda (and every block of gpt2)
                n_once += numel
        elif name.startswith("transformer.trunk.injection."):
            n_loop += numel  # Parcae's A_bar h + B_bar e, once per loop
        elif name.startswith("transformer.trunk.relax."):
            # the recursive model's per-depth deltas: depth d runs in loop d // n_layer, and
            # every loop's depths hold the same number of them, so a loop's share is 1 / n_loops
            n_loop += numel / config.n_loops
        else:
            n_once += numel  # the tied embedding/head, ln_f, Parcae's ln_prelude and C
    return n_once, round(n_loop)


def attention_applications(config) -> tuple[int, int]:
    """(L_once, L_loop): block applications (each one attention) outside the loop and per loop."""
    once, twice = sum(block_uses(config, 1)), sum(block_uses(config, 2))
    return 2 * once - twice, twice - once  # uses(n) = L_once + n L_loop


def readouts(config, n_loops: int) -> int:
    """States the training loss reads out through ln_f and the head: 1, except the fully
    looped model's loss_loops="last_third" (n - 2n // 3 = ceil(n / 3)) and "all" (n)."""
    if config.variant != "fully_looped":
        return 1
    return {"last": 1, "last_third": n_loops - 2 * n_loops // 3, "all": n_loops}[config.loss_loops]


def parcae_loop_counts(mean: float, backprop_loops: int, loops: int | None = None) -> tuple[float, float]:
    """(no-grad loops, grad loops) of one Parcae training step.

    ``loops`` given: that step's T, split as (T - k, k), k = min(T, backprop_loops).
    Else the expectation over T ~ max(1, Poisson(mean)), exactly:

        E[k] = sum_{t < b} P(t) max(1, t) + b P(T >= b)      b = backprop_loops
        E[T] = mean + P(0)                                  (max(1, .) lifts T = 0 to 1)
    """
    if loops is not None:
        k = min(loops, backprop_loops)
        return float(loops - k), float(k)
    b = backprop_loops
    # P(Poisson = t) = exp(-mean) mean^t / t!, in logs so that a large mean cannot overflow
    pmf = [math.exp(-mean + t * math.log(mean) - math.lgamma(t + 1)) for t in range(b)]
    grad = sum(p * max(1, t) for t, p in enumerate(pmf)) + b * max(0.0, 1.0 - sum(pmf))
    total = mean + math.exp(-mean)
    return total - grad, grad


def _pass_flops(n_params: float, n_attention: float, config) -> float:
    """Forward FLOPs per token of n_params parameter uses and n_attention attention
    applications: 2 per weight, 2 * 2 * T * H * Q per attention (scores, then their use on v)."""
    H, Q, T = config.n_head, config.n_embd // config.n_head, config.block_size
    return 2 * n_params + 4 * n_attention * H * Q * T


def forward_flops_per_token(config, named_numels, n_loops: int | None = None) -> float:
    """Forward-only (inference) FLOPs per token at ``n_loops`` loops (None: the config's),
    2 N_applied + 4 L_applied H Q T with one readout (see the module docstring)."""
    n = config.n_loops if n_loops is None else n_loops
    n_once, n_loop = applied_parameters(config, named_numels)
    l_once, l_loop = attention_applications(config)
    return _pass_flops(n_once + n * n_loop, l_once + n * l_loop, config)


def equal_flops_loops(config, named_numels, flops: float) -> float:
    """The loop count, a real number, at which a looped model's forward FLOPs per token
    (``forward_flops_per_token``) equal ``flops``, e.g. an unlooped model's: the depth at
    which the two are compared at equal inference compute (chapter 10). Below 1 when even
    one loop costs more; a gpt2 model has no loop count to choose (ValueError)."""
    if config.variant == "gpt2":
        raise ValueError("equal_flops_loops: a gpt2 model applies each block once; it has no loop count")
    base = forward_flops_per_token(config, named_numels, 0)  # the once-parts: embedding, head, prelude, coda
    per_loop = forward_flops_per_token(config, named_numels, 1) - base  # forward(n) = base + n per_loop
    return (flops - base) / per_loop


def flops_per_token(config, named_numels) -> float:
    """Training FLOPs per token at the config's loop count, for Parcae the expectation over
    its random T: ``training_flops_per_token(config, named_numels)`` (see there). For GPT-2,
    PaLM's 6 N + 12 L H Q T (exercise 4.4).

    ``named_numels``: (name, number of elements) of every parameter, tied ones once, as
    ``[(n, p.numel()) for n, p in model.named_parameters()]``."""
    return training_flops_per_token(config, named_numels)


def training_flops_per_token(config, named_numels, n_loops: int | None = None) -> float:
    """Training FLOPs per token: 6 N_applied + 12 L_applied H Q T for what runs with
    gradient, 2 N + 4 L H Q T for Parcae's no-grad loops (see the module docstring).

    ``n_loops``: one step's loop count (Parcae's sampled T), or one per sequence (the mean
    of their counts: each sequence's own loops, the model's FLOPs; the batch computes
    every row for the longest, masked); None = the config's, for Parcae the expectation
    over T ~ max(1, Poisson(n_loops))."""
    if n_loops is not None and not isinstance(n_loops, numbers.Integral):  # per sequence (B,)
        counts = [int(t) for t in n_loops]
        return sum(training_flops_per_token(config, named_numels, t) for t in counts) / len(counts)
    n_once, n_loop = applied_parameters(config, named_numels)
    l_once, l_loop = attention_applications(config)
    if config.variant == "parcae":
        no_grad, grad = parcae_loop_counts(config.n_loops, config.backprop_loops, n_loops)
    else:
        no_grad, grad = 0, config.n_loops if n_loops is None else n_loops
    n_readout = sum(n for name, n in named_numels  # ln_f and the head (tied: listed once, under either name)
                    if name.startswith(("transformer.ln_f.", "lm_head.", "transformer.wte.")))
    extra = readouts(config, round(no_grad + grad)) - 1  # the fully looped loss's other readouts
    return (3 * _pass_flops(n_once + grad * n_loop + extra * n_readout, l_once + grad * l_loop, config)
            + _pass_flops(no_grad * n_loop, no_grad * l_loop, config))


# Peak dense FLOP/s by device name and precision (NVIDIA datasheets). "tf32" is a float32
# model with TF32 matmuls allowed; "fp32" without.
PEAK_FLOPS = {
    "H100 SXM": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},  # the H100 SXM's chip, more memory
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
    # GeForce: tensor-core peaks with float32 accumulation (what autocast uses), half the
    # float16-accumulate figure on the box.
    "RTX 4090": {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12},
}
# How torch.cuda.get_device_name() spells them: "NVIDIA H100 80GB HBM3" is the SXM part.
_ALIASES = [
    (r"H100.*(SXM|HBM3)", "H100 SXM"),
    (r"H100.*PCIe", "H100 PCIe"),
    (r"H200", "H200"),
    (r"A100", "A100"),
    (r"V100", "V100"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
    (r"RTX 4090", "RTX 4090"),
]


def device_peak_flops(device_name: str | None, precision: str) -> float | None:
    """The peak FLOP/s of ``device_name`` at ``precision`` (bf16/fp16/tf32/fp32), or None
    when the device or the precision is not in the table."""
    if not device_name:
        return None
    for pattern, key in _ALIASES:
        if re.search(pattern, device_name, flags=re.I):
            return PEAK_FLOPS[key].get(precision)
    return None


def precision_of(dtype: str, tf32: bool) -> str:
    return {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "tf32" if tf32 else "fp32")


def mfu(flops_per_tok: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Fraction of the peak reached, or None (unknown) without a peak."""
    if peak is None or tokens_per_s <= 0:
        return None
    return flops_per_tok * tokens_per_s / peak


def format_mfu(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.1f}%"


__all__ = ["flops_per_token", "training_flops_per_token", "forward_flops_per_token", "equal_flops_loops", "block_uses",
           "applied_parameters", "attention_applications", "readouts", "parcae_loop_counts", "PEAK_FLOPS",
           "device_peak_flops", "precision_of", "mfu", "format_mfu"]
