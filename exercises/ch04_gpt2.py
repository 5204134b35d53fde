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
    the leading dims being e.g. (B, n_head); ``is_causal``; ``scale`` (None means
    1 / sqrt(E)). Return a Tensor of shape (..., L, Ev):

        att = q @ k^T * scale                 (..., L, S): how much query i attends to key j
        att[..., i, j] = -inf  for j > i     if is_causal: position i sees only positions <= i
        out = softmax(att, dim=-1) @ v

    Build it from Tensor ops (``k.transpose(-2, -1)``, ``@``, ``masked_fill``,
    ``F.softmax``) so autograd differentiates it. A boolean mask "above the diagonal"
    is ``np.triu(np.ones((L, S), dtype=bool), k=1)``; exp(-inf) = 0 removes those keys.
    You need not support ``attn_mask`` or ``dropout_p`` (not graded; raise
    NotImplementedError if they are given). Library (fused, with a hand-written
    backward): ``minilooped.functional.scaled_dot_product_attention``.
    """
    raise NotImplementedError("ex4_1: scaled_dot_product_attention")


class CausalSelfAttention(_LibraryCausalSelfAttention):
    """Exercise 4.2 -- GPT-2's multi-head causal self-attention (the parameters are set up
    by the library's constructor: ``self.c_attn`` Linear(C, 3C), ``self.c_proj``
    Linear(C, C), ``self.resid_dropout``, ``self.n_head``, ``self.n_embd``, ``self.dropout``)."""

    def forward(self, x, xq=None, relax=None):
        """``x`` (B, T, C) -> (B, T, C). Only ``xq=None, relax=None`` is graded (the two
        extra inputs serve the looped models of later chapters).

            q, k, v = c_attn(x) split into three (B, T, C) along the last dim
            each -> (B, T, n_head, hs) -> (B, n_head, T, hs),   hs = C // n_head
            y = causal attention of q, k, v                     (B, n_head, T, hs)
            y -> (B, T, n_head, hs) -> (B, T, C)                the heads side by side
            return resid_dropout(c_proj(y))

        Use ``F.scaled_dot_product_attention(q, k, v, is_causal=True,
        dropout_p=self.dropout if self.training else 0.0)``, and ``.split``, ``.view``
        and ``.transpose``. Mind the order: reshaping (B, T, C) straight to
        (B, n_head, T, hs) mixes positions into heads.
        Library: ``minilooped.models.attention.CausalSelfAttention.forward``.
        """
        raise NotImplementedError("ex4_2: CausalSelfAttention.forward")


class Block(_LibraryBlock):
    """Exercise 4.3 -- GPT-2's pre-LayerNorm transformer block (modules from the library's
    constructor: ``self.ln_1``, ``self.attn``, ``self.ln_2``, ``self.mlp``)."""

    def forward(self, x, xq=None, relax=None):
        """``x`` (B, T, C) -> (B, T, C), two residual updates, each normalising its input:

            x = x + attn(ln_1(x))
            x = x + mlp(ln_2(x))

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
    Return a number:

        6 N + 12 L H Q T

    N: the parameters that multiply, i.e. all but the position embeddings
    "transformer.wpe.*" (a lookup; the token embedding counts, as the output head);
    2 FLOPs per weight forward, 4 backward. L = n_layer, H = n_head, Q = n_embd // n_head,
    T = block_size: the attention scores and their weighted sum.
    Only ``config.variant == "gpt2"`` is graded here; chapter 5 counts looped blocks.
    Library: ``minilooped.training.mfu.flops_per_token``.
    """
    raise NotImplementedError("ex4_4: flops_per_token")
