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
but ~1.16x its FLOPs (papers.md, section 1). Two approximations, stated: Parcae's loop
count is its mean (n_loops) and its truncated backward is counted as a full one (an upper
bound); the position-embedding lookup costs nothing, the tied head is one matmul.

MFU = achieved FLOP/s / the device's peak. Peaks come from the vendors' datasheets
(dense, no sparsity). An unknown device, every CPU included, has no peak: MFU is
reported as unknown rather than guessed.
"""
from __future__ import annotations

import re


def block_uses(config) -> list[int]:
    """How many times each unique block ``transformer.h.i`` runs per forward pass."""
    c = config
    if c.variant == "gpt2":
        return [1] * c.n_layer
    if c.variant in ("fully_looped", "recursive"):
        return [c.n_loops] * c.n_layer
    return [c.n_loops if c.loop_start <= i < c.loop_end else 1 for i in range(c.n_layer)]


def flops_per_token(config, named_numels) -> float:
    """Training FLOPs per token, 6 N_applied + 12 L_applied H Q T (see the module docstring).

    ``named_numels``: (name, number of elements) of every parameter, tied ones once, as
    ``[(n, p.numel()) for n, p in model.named_parameters()]``."""
    uses = block_uses(config)
    n_applied = 0
    for name, numel in named_numels:
        if name.startswith("transformer.wpe"):
            continue  # a lookup, no multiply-adds
        m = re.match(r"transformer\.h\.(\d+)\.", name)
        if m:
            n_applied += numel * uses[int(m.group(1))]
        elif name.startswith("transformer.trunk.injection."):
            n_applied += numel * config.n_loops  # Parcae's B_bar e, once per loop
        else:
            n_applied += numel  # the tied embedding/head, ln_f, Parcae's C, per-depth LoRA deltas
    L = sum(uses)
    H, Q, T = config.n_head, config.n_embd // config.n_head, config.block_size
    return 6 * n_applied + 12 * L * H * Q * T


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


__all__ = ["flops_per_token", "block_uses", "PEAK_FLOPS", "device_peak_flops", "precision_of", "mfu",
           "format_mfu"]
