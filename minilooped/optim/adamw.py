"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    p <- p (1 - lr wd)                           decay, decoupled from the gradient
    m <- beta1 m + (1 - beta1) g                 first moment
    v <- beta2 v + (1 - beta2) g^2               second moment
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""
from __future__ import annotations

import math

from .. import backend
from .optimizer import Optimizer


class AdamW(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"AdamW: lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def step(self) -> None:
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                state = self.state.get(id(p))
                if state is None:
                    xp = backend.array_module(p.data)
                    state = self.state[id(p)] = {
                        "step": 0.0,
                        "exp_avg": xp.zeros_like(p.data),
                        "exp_avg_sq": xp.zeros_like(p.data),
                    }
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = xp.zeros_like(p.data)
                state["step"] += 1
                t = state["step"]
                bc1 = 1 - b1 ** t
                bc2_sqrt = math.sqrt(1 - b2 ** t)
                arrays = [p.data, g, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")]
                xp = backend.array_module(p.data)
                if all(a is None or a.flags.c_contiguous for a in arrays):
                    flat = [None if a is None else a.reshape(-1) for a in arrays]
                    if p.data.size <= backend.BLOCK:  # most parameters: biases and norms
                        adamw_update(*flat, lr, b1, b2, eps, wd, bc1, bc2_sqrt)
                    else:  # one cache-sized block at a time, on threads (backend.for_blocks)
                        backend.for_blocks(
                            lambda lo, hi: adamw_update(*[None if a is None else a[lo:hi] for a in flat],
                                                        lr, b1, b2, eps, wd, bc1, bc2_sqrt),
                            p.data.size, xp=xp)
                else:
                    adamw_update(*arrays, lr, b1, b2, eps, wd, bc1, bc2_sqrt)


def adamw_update(p, g, m, v, vmax, lr, b1, b2, eps, wd, bc1, bc2_sqrt) -> None:
    """One AdamW step on arrays, in place: p the weights, g the gradient, m and v the
    moments (vmax for amsgrad, else None); bc1 = 1 - b1^t and bc2_sqrt = sqrt(1 - b2^t)."""
    xp = backend.array_module(p)
    if wd != 0:
        p *= 1 - lr * wd                     # decoupled weight decay
    tmp = g - m
    tmp *= 1 - b1
    m += tmp                                 # torch's lerp form of b1 m + (1 - b1) g
    v *= b2
    xp.multiply(g, g, out=tmp)
    tmp *= 1 - b2
    v += tmp                                 # b2 v + (1 - b2) g^2
    if vmax is not None:
        xp.maximum(vmax, v, out=vmax)
        v = vmax
    # p - lr / bc1 * m / (sqrt(v) / bc2_sqrt + eps), with bc2_sqrt multiplied through so the
    # division by it is folded into the step size: one pass fewer, the same number
    xp.sqrt(v, out=tmp)
    tmp += eps * bc2_sqrt
    xp.divide(m, tmp, out=tmp)
    tmp *= lr * bc2_sqrt / bc1
    p -= tmp
