"""Loop-Residual GPT-2 (Ng & Wang, arXiv 2409.14199).

NumPy core; the PyTorch mirror minilooped/torch/models/loop_residual.py reads line by line alike.

A contiguous group of blocks h[n_prelude : n_layer - n_coda] is applied n_loops times,
each pass predicting a residual:

    x^(t) = x^(t-1) + f_theta(x^(t-1)),   t = 1 .. n_loops

with f_theta the group's residual branch. A pre-LN GPT-2 block already computes
x + g(x), so re-applying the group realises the rule exactly (papers.md, section 1).
Unlooped blocks before (prelude) and after (coda) the group are optional; the paper
loops the whole stack (n_prelude = n_coda = 0). Parameters do not depend on n_loops.
"""
from .trunk import Trunk


class LoopResidual(Trunk):
    def forward(self, x, blocks, n_loops=None):
        c = self.config
        for i in range(c.loop_start):  # prelude, applied once
            x = blocks[i](x)  # (B, T, C)
        for _ in range(self.loop_count(n_loops)):
            for i in range(c.loop_start, c.loop_end):
                x = blocks[i](x)  # x <- x + f(x), one block's branch at a time: (B, T, C)
            self.record(x)
        for i in range(c.loop_end, c.n_layer):  # coda, applied once
            x = blocks[i](x)  # (B, T, C)
        return [x]
