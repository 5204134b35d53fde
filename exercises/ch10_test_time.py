"""Chapter 10 exercises: test-time compute.

    python -m minilooped.grade 10     # grade them all: a score table
    pytest -m ex10_3                  # one exercise, with the full failure report

Exercises 10.1, 10.2 and 10.4 are arithmetic on numbers and configs (NumPy, SciPy); 10.3
works on Tensors of log-probabilities. Each is graded on its own; where one needs another's
result, call the library's (``minilooped.training.evaluation``, ``minilooped.training.mfu``),
not yours. The docstrings say what to compute and what goes in and out; how is yours to
derive (chapter 10).
"""


def fit_depth_curve(depths, losses, rise_tol=0.002):
    """Exercise 10.1 -- fit the saturating depth curve, or say why no fit means anything.

    Inputs: ``depths``, loop counts (ints >= 1, any order); ``losses``, the val loss at each
    (floats, same length); ``rise_tol`` in nats. Fit L(T) = L_inf + A exp(-T / tau) by least
    squares (``scipy.optimize.curve_fit``; the library's ``saturating_exp(T, L_inf, A, tau)``
    is the model) from a starting point you choose well (curve_fit from a bad one converges
    to nonsense or not at all: think about what the model is when tau is fixed).

    Return a dict. When a fit is meaningful: {"fitted": True, "reason": None, "L_inf", "A",
    "tau" (floats), "stderr": {"L_inf", "A", "tau"} (their standard errors: the square roots
    of the diagonal of curve_fit's covariance), "rms_residual" (float), "residuals" (a list,
    in the order of increasing depth)}. Otherwise {"fitted": False, "reason": a sentence}.
    Decide when no fit means anything and refuse then; the grader checks these cases:

    - fewer than 4 depths;
    - a loss that is not finite;
    - a flat curve: every loss within 1e-4 nats of the lowest;
    - a rising curve: the loss at the deepest depth more than ``rise_tol`` above the lowest;
    - a fit that converges to a curve that does not decay (A <= 0);
    - parameters the depths do not determine (a standard error larger than A or than tau).

    Library: ``minilooped.training.evaluation.fit_depth_curve``.
    """
    raise NotImplementedError("ex10_1: fit_depth_curve")


def loops_to_saturate(A, tau, eps):
    """Exercise 10.2 -- how deep to run a model to come within ``eps`` of its asymptote.

    Inputs: the fitted ``A`` (nats, > 0) and ``tau`` (loops, > 0) of a depth curve
    L(T) = L_inf + A exp(-T / tau), and ``eps`` (nats, > 0). Return an int: the fewest
    loops T >= 1 at which the fitted curve is at most ``eps`` above L_inf. Raise ValueError
    when an input is not positive. Mind the rounding: when the answer is a whole number of
    loops, floating point may put it a hair above.

    Library: ``minilooped.training.evaluation.loops_to_saturate``.
    """
    raise NotImplementedError("ex10_2: loops_to_saturate")


def halts(criterion, threshold, log_probs, prev_log_probs):
    """Exercise 10.3 -- which positions stop looping after this loop (adaptive exit).

    Inputs: ``criterion``, "kl" or "max_prob"; ``threshold``, a float; ``log_probs``, a
    Tensor (B, T, vocab) of the next-token log-probabilities each position predicts after
    this loop; ``prev_log_probs``, the same after the previous loop, or None after the
    first loop. Return a NumPy boolean array (B, T), True where the position halts:

    - "kl": the prediction has settled, the KL divergence of the previous loop's
      distribution from this loop's, KL(p_prev || p_now), is below ``threshold``
      (Huginn's zero-shot exit). Nothing halts when there is no previous loop.
    - "max_prob": the model is confident: its most likely token has probability at least
      ``threshold``.

    Use Tensor operations (``.exp()``, ``.sum(dim=-1)``, ``.amax(dim=-1)``), then
    ``.detach().cpu().numpy()`` at the end.

    Library: ``minilooped.models.adaptive.halts``.
    """
    raise NotImplementedError("ex10_3: halts")


def equal_flops_loops(config, named_numels, flops):
    """Exercise 10.4 -- the loop count of a looped model that costs a given compute.

    Inputs: ``config``, a GPTConfig of a looped variant ("loop_residual", "contractive",
    "fully_looped", "parcae", "recursive"); ``named_numels``, (parameter name, number of
    elements) of every parameter, tied ones once; ``flops``, forward FLOPs per token (e.g.
    an unlooped model's, ``mfu.forward_flops_per_token(gpt2_config, gpt2_numels)``).

    Return a float: the loop count n (a real number: it need not be whole, and it may be
    below 1) at which the looped model's forward FLOPs per token,
    ``mfu.forward_flops_per_token(config, named_numels, n)``, equal ``flops``. Raise
    ValueError for a "gpt2" config (it has no loop count). Derive it from how the forward
    count depends on n; do not search.

    Library: ``minilooped.training.mfu.equal_flops_loops``.
    """
    raise NotImplementedError("ex10_4: equal_flops_loops")
