"""Stochastic gradient descent with momentum, exactly as torch.optim.SGD."""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer


class SGD(Optimizer):
    """p <- p - lr * d,  where d = g + wd p, or with momentum  b <- mu b + (1 - dampening) d."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def step(self) -> None:
        for group in self.param_groups:
            lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = -p.grad if group["maximize"] else p.grad
                if wd != 0:
                    d = d + wd * p.data
                if mu != 0:
                    state = self.state.setdefault(id(p), {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        # xp.array, not d.copy(): for a 0-d parameter d may be a NumPy scalar,
                        # which the in-place updates below would replace instead of update
                        buf = state["momentum_buffer"] = backend.array_module(p.data).array(d, dtype=p.dtype)
                    else:
                        buf *= mu
                        buf += (1 - damp) * d
                    d = d + mu * buf if nesterov else buf
                p.data -= lr * d
