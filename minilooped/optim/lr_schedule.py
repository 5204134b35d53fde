"""Learning-rate schedule: linear warmup, then cosine decay to min_lr (nanoGPT's get_lr)."""
from __future__ import annotations

import math


def warmup_cosine(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """lr at ``step``: rises linearly over warmup_steps, then follows half a cosine
    from max_lr at the end of warmup down to min_lr at max_steps, and stays there."""
    if warmup_steps < 0 or max_steps < 0:
        raise ValueError("warmup_cosine: warmup_steps and max_steps must be >= 0")
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    ratio = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)


def set_lr(optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group (works for torch optimisers too)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
