"""What every trunk shares.

PyTorch mirror of the NumPy core's minilooped/models/trunk.py, line by line alike.

A trunk is the part of GPT between the embeddings and the final LayerNorm: it decides
how the blocks ``transformer.h`` are applied, which is all that tells the variants apart
(gpt.py: Stack; loop_residual.py; fully_looped.py; contractive.py; parcae.py;
recursive.py). The blocks live in ``transformer.h`` for every variant, under GPT-2's
names, and are passed to the trunk's forward; the trunk holds only the parameters its
variant adds (Parcae's injection, the recursive model's LoRA deltas).

``forward(x, blocks, n_loops=None, ...)`` takes the embedded input x (B, T, C) and
returns a list of readout states (B, T, C): the last one gives the logits, and the loss
is the mean over all of them (only the fully looped model reads out more than one).

The trace hook: while ``GPT.trace_loops()`` is active, ``self.trace`` is a list and
``record(x)`` appends the hidden state after every loop as a NumPy array. Recording
reads the state and never changes it, so outputs stay the same.
"""
import torch.nn as nn


class Trunk(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.trace = None  # a list while GPT.trace_loops() is active

    def record(self, x):
        """Append the hidden state (B, T, C) to the trace, if one is being taken."""
        if self.trace is not None:
            self.trace.append(x.detach().cpu().numpy())

    def init_weights(self):
        """Initialise the trunk's own parameters (after GPT's nanoGPT init)."""

    def loop_count(self, n_loops):
        """The loop count to run: the config's, or the one asked for at call time."""
        n = self.config.n_loops if n_loops is None else n_loops
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n_loops={n_loops!r} must be an integer >= 1 (or None for "
                             f"the config's n_loops={self.config.n_loops}).")
        return n
