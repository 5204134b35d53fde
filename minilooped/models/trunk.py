"""What every trunk shares: the anatomy of a loop.

NumPy core; the PyTorch mirror minilooped/torch/models/trunk.py reads line by line alike.

A trunk is the part of GPT between the embeddings and the final LayerNorm: it decides
how the blocks ``transformer.h`` are applied, which is all that tells the variants apart
(gpt.py: Stack; loop_residual.py; fully_looped.py; contractive.py; parcae.py;
recursive.py). The blocks live in ``transformer.h`` for every variant, under GPT-2's
names, and are passed to the trunk's methods; the trunk holds only the parameters its
variant adds (Parcae's injection, the recursive model's LoRA deltas).

Every looped model is the same three steps, and every trunk defines them:

    h, ctx = enter(x, blocks)          the prelude: the loop's initial state h_0, and the
                                       context every loop sees again (Parcae's injected
                                       input e, the fully looped model's embeddings E)
    h      = step(h, ctx, blocks, t)   loop t = 0 .. n_loops - 1: the map h_t -> h_{t+1}
    x      = readout(h, ctx, blocks)   what ln_f sees: the coda, Parcae's C, ...

``forward(x, blocks, n_loops=None)`` is enter, n_loops steps, readout, and returns a list
of readout states (B, T, C): the last one gives the logits, and the loss is the mean
over all of them (only the fully looped model reads out more than one). The lab calls
the three parts one by one: the logit lens reads out after every loop, the Jacobian of
one loop is the Jacobian of ``step``, generation with a KV cache runs ``step`` on new
positions only.

The trace hook: while ``GPT.trace_loops()`` is active, ``self.trace`` is a list and
``record(x)``, called by every ``step``, appends the hidden state after the loop as a
NumPy array. Recording reads the state and never changes it, so outputs stay the same.

The cache hook: while GPT.forward runs with a KV cache (kv_cache.py), ``self.cache`` is
it, and x holds the positions after the ``cache.length`` it has seen. The attention
layers hold it too and do the caching: the trunks' code is the same with or without.
"""
import minilooped.nn as nn


class Trunk(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.trace = None  # a list while GPT.trace_loops() is active
        self.cache = None  # a KVCache while GPT.forward runs with one

    def record(self, x):
        """Append the hidden state (B, T, C) to the trace, if one is being taken."""
        if self.trace is not None:
            self.trace.append(x.detach().cpu().numpy())

    def init_weights(self):
        """Initialise the trunk's own parameters (after GPT's nanoGPT init)."""

    def no_weight_decay(self):
        """The trunk's 2-D parameters that AdamW must not decay (GPT.optim_groups)."""
        return []

    def loop_count(self, n_loops):
        """The loop count to run: the config's, or the one asked for at call time."""
        n = self.config.n_loops if n_loops is None else n_loops
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n_loops={n_loops!r} must be an integer >= 1 (or None for "
                             f"the config's n_loops={self.config.n_loops}).")
        return n

    def enter(self, x, blocks):
        """The prelude, blocks h[:n_prelude] applied once: (h_0, context) from the embedded
        input x (B, T, C). No context by default."""
        for i in range(self.config.loop_start):
            x = blocks[i](x)  # (B, T, C)
        return x, None

    def step(self, h, ctx, blocks, t):
        """Loop t: h_t -> h_{t+1} (B, T, C)."""
        raise NotImplementedError

    def readout(self, h, ctx, blocks):
        """The coda, blocks h[n_layer - n_coda:] applied once: the state ln_f reads (B, T, C)."""
        for i in range(self.config.loop_end, self.config.n_layer):
            h = blocks[i](h)  # (B, T, C)
        return h

    def forward(self, x, blocks, n_loops=None):
        h, ctx = self.enter(x, blocks)
        for t in range(self.loop_count(n_loops)):
            h = self.step(h, ctx, blocks, t)  # (B, T, C)
        return [self.readout(h, ctx, blocks)]
