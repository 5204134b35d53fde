"""Chapter 5 exercises: Loop-Residual networks.

    python -m minilooped.grade 5      # grade them all: a score table
    pytest -m ex5_3                   # one exercise, with the full failure report

Exercise 5.1 writes the loop itself; 5.2 is arithmetic on a config; 5.3 and 5.4 measure a
trained (or random) looped model loop by loop, with the NumPy core's Tensors and modules.
Each is graded on its own: the blocks, the readout and the loss are the library's. The
docstrings say what to compute and what goes in and out; how is yours to derive
(chapter 5 and, for the FLOPs, chapter 4's count).
"""
from minilooped.models.loop_residual import LoopResidual as _LibraryLoopResidual


class LoopResidual(_LibraryLoopResidual):
    """Exercise 5.1 -- the Loop-Residual trunk (config in ``self.config``: the looped group
    is the blocks ``loop_start <= i < loop_end``, which may be all of them)."""

    def step(self, h, ctx, blocks, t):
        """One loop, t = 0 .. n_loops - 1: the hidden state ``h`` (B, T, C) -> the next one,
        (B, T, C), by the Loop-Residual rule of arXiv 2409.14199 with the looped group of
        ``blocks`` (``transformer.h``, GPT-2 pre-LN blocks). ``ctx`` is None for this
        variant. Call ``self.record(h)`` on the state you return (the trace hook of
        trunk.py). Library: ``minilooped.models.loop_residual.LoopResidual.step``.
        """
        raise NotImplementedError("ex5_1: LoopResidual.step")


def forward_flops_per_token(config, named_numels, n_loops=None):
    """Exercise 5.2 -- forward (inference) FLOPs per token of a possibly looped model.

    Inputs: ``config``, a GPTConfig of variant "gpt2" or "loop_residual" (read
    ``variant``, ``n_layer``, ``n_loops``, ``n_prelude``, ``n_coda``, ``n_head``,
    ``n_embd``, ``block_size``; ``loop_start`` and ``loop_end`` delimit the looped group);
    ``named_numels``, (parameter name, number of elements) of every parameter, the tied
    embedding/head once, as ``[(n, p.numel()) for n, p in model.named_parameters()]``;
    ``n_loops``, the loop count to run (None: the config's). Return a number: the FLOPs of
    one forward pass per token, counted as chapter 4 counts them (2 per weight use, the
    attention's scores and their use on v over the whole context, nothing for lookups)
    with every block APPLICATION counted. What costs the same at every loop count, and
    what grows with it? Library: ``minilooped.training.mfu.forward_flops_per_token``.
    """
    raise NotImplementedError("ex5_2: forward_flops_per_token")


def grad_by_loop(model, idx, targets, n_loops=None, h0=None):
    """Exercise 5.3 -- a shared weight's gradient, split by the loop that used it.

    Inputs: ``model``, a core GPT (any looped variant; graded on "loop_residual"); ``idx``
    and ``targets``, (B, T) integer arrays of token ids; ``n_loops``, the loops to run
    (None: the config's); ``h0``, leave it None (Parcae's initial state). Return a dict
    {name: array of shape (n, *p.shape)} for every parameter p of ``transformer.h``, named
    as in ``model.named_parameters()`` ("transformer.h.0.mlp.c_fc.weight"), entry [t] being
    the part of dL/dp (L = the model's loss on the batch) that comes from loop t's use of
    p. Work in eval mode, and leave the model as you found it (its mode and every
    parameter's .grad). What must the n entries add up to, and why?
    Library: ``minilooped.models.diagnostics.grad_by_loop``.
    """
    raise NotImplementedError("ex5_3: grad_by_loop")


def logit_lens(model, idx, targets, n_loops=None, h0=None):
    """Exercise 5.4 -- the per-loop logit lens: what the model would predict if it stopped
    after each loop.

    Inputs: ``model``, a core GPT (any looped variant; graded on "loop_residual" with and
    without prelude and coda blocks); ``idx``, ``targets``: (B, T) integer arrays, a target
    of -1 meaning "no target here"; ``n_loops`` (None: the config's); ``h0``, leave it
    None. Read out the hidden state after every loop t = 0 .. n - 1 the way the model reads
    out its last one, and return {"loss": (n,), "kl": (n,)} as float64 NumPy arrays:
    loss[t], the cross-entropy of loop t's prediction over the positions that have a
    target; kl[t], the mean over all B T positions of the KL divergence of loop t's
    next-token distribution from the model's final one, KL(p_t || p_final) (zero at the
    last loop). Eval mode, no gradient, the model left as it was. The trunk's ``enter``,
    ``step`` and ``readout`` (trunk.py) are the pieces.
    Library: ``minilooped.models.diagnostics.logit_lens``.
    """
    raise NotImplementedError("ex5_4: logit_lens")
