"""SCORE, contractive recurrent depth (Godin, arXiv 2603.10544; chapter 8).

NumPy core; the PyTorch mirror minilooped/torch/models/contractive.py reads line by line alike.

The looped group F is iterated with an explicit-Euler, ODE-inspired update

    h_{t+1} = (1 - dt) h_t + dt F(h_t),   t = 0 .. n_loops - 1,   h_0 = the group's input

with dt = config.dt, or 1 / n_loops by default (one secondary example used 4 iterations
with dt = 0.25). The paper does not say which block F is; both readings are selectable:

- score_f="block": F is the whole pre-LN block stack, F(h) = h + g(h), so the update
  is h + dt g(h): an Euler step of dh/dtau = g(h).
- score_f="branch": F = g, the residual branch only (g(h) = stack(h) - h): a leaky step
  towards g(h).

The map is a contraction only if (1 - dt) + dt Lip(F) < 1. dt stays fixed when n_loops
changes at inference (config.step_size). Unlooped prelude / coda blocks are optional
(Trunk.enter and Trunk.readout apply them).
"""
from .trunk import Trunk


class Contractive(Trunk):
    def step(self, h, ctx, blocks, t):
        c = self.config
        dt = c.step_size
        f = h
        for i in range(c.loop_start, c.loop_end):
            f = blocks[i](f)  # F(h) = h + g(h), the whole block(s): (B, T, C)
        if c.score_f == "branch":
            f = f - h  # F(h) = g(h), the residual branch only
        h = (1 - dt) * h + dt * f  # h <- (1 - dt) h + dt F(h): (B, T, C)
        self.record(h)
        return h
