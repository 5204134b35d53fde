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
                m, v = state["exp_avg"], state["exp_avg_sq"]
                xp = backend.array_module(p.data)
                if wd != 0:
                    p.data *= 1 - lr * wd
                m += (g - m) * (1 - b1)          # torch's lerp form of beta1 m + (1 - beta1) g
                v *= b2
                v += (1 - b2) * (g * g)
                bc1 = 1 - b1 ** t
                bc2_sqrt = math.sqrt(1 - b2 ** t)
                if group["amsgrad"]:
                    vmax = state["max_exp_avg_sq"]
                    xp.maximum(vmax, v, out=vmax)
                    denom = xp.sqrt(vmax) / bc2_sqrt + eps
                else:
                    denom = xp.sqrt(v) / bc2_sqrt + eps
                p.data -= (lr / bc1) * (m / denom)
