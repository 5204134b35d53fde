"""Loop-Residual GPT-2 (Ng & Wang, arXiv 2409.14199; chapter 5).

PyTorch mirror of the NumPy core's minilooped/models/loop_residual.py, line by line alike.

A contiguous group of blocks h[n_prelude : n_layer - n_coda] is applied n_loops times,
each pass predicting a residual:

    x^(t) = x^(t-1) + f_theta(x^(t-1)),   t = 1 .. n_loops

with f_theta the group's residual branch. A pre-LN GPT-2 block already computes
x + g(x), so re-applying the group realises the rule exactly. Unlooped blocks before
(prelude) and after (coda) the group are optional (Trunk.enter and Trunk.readout apply
them); the paper loops the whole stack (n_prelude = n_coda = 0). Parameters do not depend
on n_loops.
"""
from .trunk import Trunk


class LoopResidual(Trunk):
    def step(self, h, ctx, blocks, t):
        for i in range(self.config.loop_start, self.config.loop_end):
            h = blocks[i](h)  # x <- x + f(x), one block's branch at a time: (B, T, C)
        self.record(h)
        return h
