"""Chapter 6 exercises: why loops break.

    python -m minilooped.grade 6      # grade them all: a score table
    pytest -m ex6_2                   # one exercise, with the full failure report

NumPy on small arrays: no model, no training. The docstrings say what to compute and what
goes in and out; the mathematics is yours to derive (chapter 6, sections 2-4).
"""


def linear_fixed_point(A, b):
    """Exercise 6.1 -- the fixed point of the linear loop x <- A x + b.

    Inputs: ``A``, a square (d, d) array; ``b``, a (d,) array. Return the (d,) float array
    x* that one more loop leaves unchanged, computed directly (not by running the loop:
    it must also work when the loop itself runs away). When no unique such state exists,
    raise ``ValueError`` with a message that says why. For which A does that happen, and
    what does it have to do with the plain residual update h <- h + c?

    Library: ``minilooped.models.stability.linear_fixed_point``.
    """
    raise NotImplementedError("ex6_1: linear_fixed_point")


def stable_scale(A):
    """Exercise 6.2 -- how far the linear loop can be scaled before it stops settling.

    Input: ``A``, a square (d, d) array (real, not necessarily symmetric). Consider the loop
    x <- s A x + b for a scale s >= 0. Return the float s* such that for every 0 <= s < s*
    the loop converges from every x_0 and for every b, and for s > s* it does not for some
    x_0; ``math.inf`` when no scale ever makes it diverge. The grader includes matrices for
    which the obvious norm gives the wrong answer.

    Library: ``minilooped.models.stability.stable_scale``.
    """
    raise NotImplementedError("ex6_2: stable_scale")


def residual_norm_bound(h0_norm, lipschitz, f0_norm, n_loops):
    """Exercise 6.3 -- how fast can the residual stream of a plain loop grow?

    The loop is h_{t+1} = h_t + f(h_t). All we know about f: it is L-Lipschitz
    (||f(x) - f(y)|| <= L ||x - y||) and ||f(0)|| = f0_norm; all we know about the start:
    ||h_0|| = h0_norm. Inputs are floats >= 0 and an int ``n_loops`` >= 0.

    Return a (n_loops + 1,) float array whose entry t bounds ||h_t|| for EVERY such f and
    h_0, and is the smallest number that does (some f and h_0 reach it). Mind L = 0.
    Raise ``ValueError`` for negative or non-finite inputs.

    Library: ``minilooped.models.stability.residual_norm_bound``.
    """
    raise NotImplementedError("ex6_3: residual_norm_bound")


def power_iteration(jvp, vjp, shape, iters, tol, seed):
    """Exercise 6.4 -- the largest gain of a map you can only apply, not write down.

    A loop step's Jacobian J over a (B, T, C) state is far too large to build, but autograd
    gives its products: ``jvp(v)`` returns J v and ``vjp(u)`` returns J^T u, for NumPy
    arrays of ``shape`` (J maps that space to itself). Estimate sigma_max(J), the largest
    singular value, by an iteration started from a random unit vector drawn with
    ``np.random.default_rng(seed)``. Stop when two successive estimates differ by at most
    ``tol`` times the latest (then converged = True), or after ``iters`` (an int >= 1)
    products; raise ``ValueError`` for another ``iters``.

    Return a dict: "sigma" (float), "iters" (int, the iterations run), "converged" (bool),
    "history" (a 1-D array of the estimates, one per iteration). The grader includes maps
    whose eigenvalues are much smaller than their largest singular value.

    Library: ``minilooped.models.diagnostics.power_iteration``.
    """
    raise NotImplementedError("ex6_4: power_iteration")
