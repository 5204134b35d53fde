"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    p <- p (1 - lr wd)                           decay, decoupled from the gradient
    m <- beta1 m + (1 - beta1) g                 first moment
    v <- beta2 v + (1 - beta2) g^2               second moment
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""
from __future__ import annotations

from .. import backend
from ..ops import fast
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
                if state is None:  # the moments start at zero
                    xp = backend.array_module(p.data)
                    state = self.state[id(p)] = {
                        "step": 0.0,
                        "exp_avg": xp.zeros_like(p.data),
                        "exp_avg_sq": xp.zeros_like(p.data),
                    }
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = xp.zeros_like(p.data)
                state["step"] += 1
                update = fast.adamw_update if fast.enabled() else adamw_update  # fast: in place, blocked
                update(p.data, g, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                       lr, b1, b2, eps, wd, state["step"])


def adamw_update(p, g, m, v, vmax, lr, b1, b2, eps, wd, t) -> None:
    """One AdamW step on arrays, in place: p the weights, g the gradient, m and v the
    moments (vmax, the largest v so far, for amsgrad, else None), t the step count from 1."""
    xp = backend.array_module(p)
    p *= 1 - lr * wd                             # decoupled weight decay
    m *= b1
    m += (1 - b1) * g                            # m = b1 m + (1 - b1) g
    v *= b2
    v += (1 - b2) * g * g                        # v = b2 v + (1 - b2) g^2
    if vmax is not None:
        xp.maximum(vmax, v, out=vmax)            # amsgrad: the largest second moment so far
        v = vmax
    m_hat = m / (1 - b1 ** t)                    # bias corrections: m and v start at 0
    v_hat = v / (1 - b2 ** t)
    p -= lr * m_hat / (xp.sqrt(v_hat) + eps)
