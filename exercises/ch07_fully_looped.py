"""Chapter 7 exercises: the Fully Looped Transformer.

    python -m minilooped.grade 7      # grade them all: a score table
    pytest -m ex7_2                   # one exercise, with the full failure report

Each exercise is graded on its own. The docstrings say what to compute and what goes in
and out; how to compute it is yours to derive from chapter 7 (its equations, and
the measurements that show what the numbers mean).
"""
from minilooped.models.attention import CausalSelfAttention as _LibraryCausalSelfAttention


def parameter_free_rms_norm_backward(g, xhat, rstd, axes):
    """Exercise 7.1 -- the gradient of the parameter-free RMSNorm n(x).

    The forward pass computed, over the normalised dims ``axes`` (a tuple of axis
    indices, e.g. (-1,) or (2,)), rstd = 1 / sqrt(mean(x^2) + eps) and xhat = x * rstd.
    Inputs (NumPy arrays): ``g`` = dL/dxhat and ``xhat``, both of x's shape; ``rstd``,
    of x's shape with size 1 along ``axes`` (keepdims). Return dL/dx, x's shape.

    Derive it by hand: x is not saved, and the answer has no eps in it beyond rstd.
    Why does the result have (almost) no component along x, and what does a residual
    stream twice as large receive? Library: ``minilooped.ops.fused.parameter_free_rms_norm_backward``.
    """
    raise NotImplementedError("ex7_1: parameter_free_rms_norm_backward")


class CausalSelfAttention(_LibraryCausalSelfAttention):
    """Exercise 7.2 -- attention injection: the queries come from another stream.
    (Parameters from the library's constructor: ``self.c_attn`` Linear(C, 3C), whose
    weight (3C, C) and bias (3C,) hold the query, key and value maps in that order,
    ``self.c_proj``, ``self.resid_dropout``, ``self.n_head``, ``self.n_embd``.)"""

    def forward(self, x, xq=None, relax=None):
        """``x`` (B, T, C), the current stream, and ``xq`` (B, T, C), the stream the
        queries come from (the fully looped model passes the previous loop's state);
        return (B, T, C). Only calls with ``xq`` given and ``relax=None`` are graded; for
        ``xq=None`` return ``super().forward(x)``.

        Write it from the chapter's equation of attention injection: with the same
        weights, ``xq = x`` must give plain causal self-attention. Use ``F.linear`` on
        slices of ``self.c_attn.weight`` / ``.bias`` (mind a bias of None),
        ``F.scaled_dot_product_attention(..., is_causal=True)``, and the head reshapes of
        exercise 4.2. Library: ``minilooped.models.attention.CausalSelfAttention.forward``.
        """
        raise NotImplementedError("ex7_2: CausalSelfAttention.forward")


def gradient_shrink_per_loop(grad_state):
    """Exercise 7.3 -- one number for how fast the gradient fades towards early loops.

    Input: ``grad_state``, a sequence of n >= 2 floats, ||dL/dh|| after loops 0 .. n-1
    (the ``grad_state`` row of a study's ``loop_diagnostics``, measured in float32).
    Return a float r: the typical ratio grad_state[t + 1] / grad_state[t], fitted to
    all the loops by least squares on a log scale (a straight line through
    log grad_state against the loop index), not read off two of them. r = 10 means each loop
    back from the loss receives a tenth of the gradient.

    Decide what every entry of a float32 measurement means before you fit it. Raise
    ValueError when fewer than two loops can be used.
    Library: ``minilooped.models.diagnostics.gradient_shrink_per_loop``.
    """
    raise NotImplementedError("ex7_3: gradient_shrink_per_loop")


def subnormal_fraction(a, dtype="float32"):
    """Exercise 7.4 -- how much of an array is subnormal in a floating-point type.

    Inputs: ``a``, an array of any shape (float64 values, say a gradient computed in
    high precision); ``dtype``, a NumPy float type name ("float32", "float16",
    "float64"). Return the fraction (a float in [0, 1]) of the entries of ``a`` that,
    stored as ``dtype``, would be subnormal numbers: nonzero, but below the type's
    smallest normal magnitude. An empty array gives 0.0.
    Library: ``minilooped.models.diagnostics.subnormal_fraction``.
    """
    raise NotImplementedError("ex7_4: subnormal_fraction")
