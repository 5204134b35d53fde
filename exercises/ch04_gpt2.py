"""Chapter 4 exercises: GPT-2.

    python -m minilooped.grade 4      # grade them all: a score table
    pytest -m ex4_1                   # one exercise, with the full failure report

Exercises 4.1-4.3 build with Tensor ops and library modules (``import minilooped.functional
as F``), so autograd gives the backward; 4.4 is arithmetic. Each is graded on its own:
the attention inside the block of exercise 4.3 is the library's, not yours.
"""
from minilooped.models.attention import CausalSelfAttention as _LibraryCausalSelfAttention
from minilooped.models.block import Block as _LibraryBlock


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Exercise 4.1 -- attention, with the causal mask of a language model.

    Inputs: Tensors ``q`` of shape (..., L, E), ``k`` (..., S, E), ``v`` (..., S, Ev),
    the leading dims being e.g. (B, n_head); ``is_causal``; ``scale``, a float or None.
    Output: a Tensor of shape (..., L, Ev) whose row i is a weighted average of the rows of
    ``v``, the weights (positive, summing to one) growing with the dot product of query i
    and each key, multiplied by ``scale`` (section 1).

    Two things to work out. (1) ``is_causal``: which (i, j) must get weight exactly 0 so
    that no output row depends on a later position, and how to make a weight exactly 0
    before the softmax rather than after it. (2) ``scale=None``: derive the factor that
    gives the scores unit variance when q and k have independent components of mean 0
    and variance 1, whatever E.

    Build it from Tensor ops (``transpose``, ``@``, ``masked_fill``, ``F.softmax``) so
    that autograd differentiates it. You need not support ``attn_mask`` or ``dropout_p``
    (not graded; raise NotImplementedError if they are given). Library (fused, with a
    hand-written backward): ``minilooped.functional.scaled_dot_product_attention``.
    """
    raise NotImplementedError("ex4_1: scaled_dot_product_attention")


class CausalSelfAttention(_LibraryCausalSelfAttention):
    """Exercise 4.2 -- GPT-2's multi-head causal self-attention (the parameters are set up
    by the library's constructor: ``self.c_attn`` Linear(C, 3C), ``self.c_proj``
    Linear(C, C), ``self.resid_dropout``, ``self.n_head``, ``self.n_embd``, ``self.dropout``)."""

    def forward(self, x, xq=None, relax=None):
        """``x`` (B, T, C) -> (B, T, C). Only ``xq=None, relax=None`` is graded (the two
        extra inputs serve the looped models of later chapters).

        ``c_attn`` gives the queries, keys and values of all heads at once, side by side
        along the last dim (3C channels). Head h owns channels h*hs .. (h+1)*hs - 1 of each
        of the three (hs = C // n_head), at every position. Run causal attention in every
        head at once, with ``F.scaled_dot_product_attention(..., is_causal=True,
        dropout_p=self.dropout if self.training else 0.0)``, which treats all leading dims
        as a batch; put the heads' outputs back side by side per position, then
        ``c_proj`` and ``resid_dropout``.

        Design decision: the sequence of ``.split``, ``.view`` and ``.transpose`` that takes
        (B, T, 3C) to the shape attention needs and back. Several have the right shapes;
        only one keeps every position's channels in its own row. The grader changes the
        last position and checks that no earlier output moves.
        Library: ``minilooped.models.attention.CausalSelfAttention.forward``.
        """
        raise NotImplementedError("ex4_2: CausalSelfAttention.forward")


class Block(_LibraryBlock):
    """Exercise 4.3 -- GPT-2's pre-LayerNorm transformer block (modules from the library's
    constructor: ``self.ln_1``, ``self.attn``, ``self.ln_2``, ``self.mlp``)."""

    def forward(self, x, xq=None, relax=None):
        """``x`` (B, T, C) -> (B, T, C): GPT-2's block of section 4, attention then MLP,
        each a residual branch with its own LayerNorm in GPT-2's (pre-LN) place. Where the
        LayerNorm sits decides whether the identity path from input to output stays free
        of normalisation; the grader checks that with both output projections at zero the
        block returns its input exactly.

        Only ``xq=None, relax=None`` is graded (later chapters' looped models).
        Library: ``minilooped.models.block.Block.forward``.
        """
        raise NotImplementedError("ex4_3: Block.forward")


def flops_per_token(config, named_numels):
    """Exercise 4.4 -- training FLOPs per token, PaLM's count (as nanoGPT's estimate_mfu).

    Inputs: ``config``, a GPTConfig (read ``n_layer``, ``n_head``, ``n_embd``,
    ``block_size``); ``named_numels``, a list of (parameter name, number of elements),
    e.g. ``[(n, p.numel()) for n, p in model.named_parameters()]`` (the tied
    embedding/head appears once, as "transformer.wte.weight" or "lm_head.weight").
    Output: a number, the FLOPs (a multiply and an add are 2) of one training step per
    token of a full context of ``block_size`` tokens: the forward pass and the backward
    pass (which computes two products for each one of the forward), PaLM's accounting.

    Derive it: which parameters take part in a matrix product (a table lookup does not;
    the tied head does), what one weight costs per token forward and backward, and what
    the attention scores and their weighted sum cost per layer, head and token, which no
    parameter counts. The grader checks GPT-2 124M against nanoGPT's estimate_mfu.
    Only ``config.variant == "gpt2"`` is graded here; chapter 5 counts looped blocks.
    Library: ``minilooped.training.mfu.flops_per_token``.
    """
    raise NotImplementedError("ex4_4: flops_per_token")
