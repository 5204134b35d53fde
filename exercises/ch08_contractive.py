"""Chapter 8 exercises: contractive depth.

    python -m minilooped.grade 8      # grade them all: a score table
    pytest -m ex8_3                   # one exercise, with the full failure report

Exercises 8.1 and 8.2 are pieces of the models (Tensor ops, so autograd gives the
backward); 8.3-8.5 are the arithmetic of contractions on plain numbers and NumPy arrays.
Each is graded on its own.
"""
from minilooped.models.contractive import Contractive as _LibraryContractive
from minilooped.models.parcae import DiagonalInjection as _LibraryDiagonalInjection


class Contractive(_LibraryContractive):
    """Exercise 8.1 -- SCORE's loop step (the rest of the trunk is the library's)."""

    def step(self, h, ctx, blocks, t):
        """One loop of SCORE: h_t (B, T, C) -> h_{t+1} (B, T, C).

        The looped group is ``blocks[i]`` for i in ``range(self.config.loop_start,
        self.config.loop_end)``, applied in order; ``ctx`` is None and ``t`` is unused.
        The step size is ``self.config.step_size``. The new state is an explicit-Euler
        step that mixes the old state with the looped function F of it, in the proportions
        the step size says. ``self.config.score_f`` says what F is: "block" (the blocks
        themselves, residual connections included) or "branch" (what the blocks add to
        their input). Call ``self.record(h)`` on the new state before returning it.

        Library: ``minilooped.models.contractive.Contractive.step``.
        """
        raise NotImplementedError("ex8_1: Contractive.step")


class DiagonalInjection(_LibraryDiagonalInjection):
    """Exercise 8.2 -- Parcae's injection u = A_bar h + B_bar e (parameters from the
    library's constructor: ``self.a`` and ``self.dt_bias`` (C,), ``self.B`` Linear(C, C))."""

    def A_bar(self):
        """The diagonal of the discrete state matrix, a Tensor (C,).

        The continuous system is dh/ds = A h + B e with A = -diag(exp(a)), discretised over a
        step Delta = softplus(dt_bias) (per channel) by a zero-order hold: e held constant
        over the step, the linear part integrated exactly. Derive A_bar. Every entry must lie
        in (0, 1) for every real a and dt_bias: why?

        Library: ``minilooped.models.parcae.DiagonalInjection.A_bar``.
        """
        raise NotImplementedError("ex8_2: DiagonalInjection.A_bar")

    def forward(self, h, e):
        """u = A_bar h + B_bar e for h, e (B, T, C) -> (B, T, C), from Tensor ops.

        B_bar is Parcae's (and Mamba's) cheap choice for the input term: the first-order
        (Euler) approximation of the exact zero-order-hold input matrix, per channel.

        Library: ``minilooped.models.parcae.DiagonalInjection.forward``.
        """
        raise NotImplementedError("ex8_2: DiagonalInjection.forward")


def max_contractive_dt(lip):
    """Exercise 8.3 -- the step sizes for which SCORE's Euler step provably contracts.

    Input: ``lip`` >= 0, a Lipschitz constant of F. The step h -> (1 - dt) h + dt F(h) has
    a Lipschitz bound that follows from the triangle inequality (the library's
    ``euler_gain_bound(dt, lip)``; mind dt > 1). Return the supremum (a float) of the
    dt > 0 for which that bound is below 1, and 0.0 when there is no such dt. Derive it.
    A ValueError for a negative, infinite or NaN ``lip``.

    Library: ``minilooped.models.contraction.max_contractive_dt``.
    """
    raise NotImplementedError("ex8_3: max_contractive_dt")


def iterations_for_tolerance(q, first_step, tol):
    """Exercise 8.4 -- how many loops a contraction needs, known before running them.

    Inputs: ``q`` in [0, 1), a contraction factor of the loop's map; ``first_step`` >= 0,
    the size of the first update ||h_1 - h_0||; ``tol`` > 0. Return the smallest int
    n >= 0 for which Banach's a-priori bound (derive it from the geometric series of the
    updates) guarantees ||h_n - h*|| <= tol. Exact: no off-by-one from rounded
    logarithms. A ValueError for q outside [0, 1), a negative first_step or tol <= 0.

    Library: ``minilooped.models.contraction.iterations_for_tolerance``.
    """
    raise NotImplementedError("ex8_4: iterations_for_tolerance")


def fixed_point(step, h0, tol=1e-6, max_iters=1000):
    """Exercise 8.5 -- a fixed point by iteration (the forward pass of a Deep Equilibrium model).

    Inputs: ``step``, a function from a float64 NumPy array to one of the same shape;
    ``h0``, the starting array; ``tol`` > 0; ``max_iters`` an int >= 1. Iterate the step
    until the update is small RELATIVE to the state (the measure the chapter's lab calls
    rel_update), or until ``max_iters`` steps. Stop early, without raising, when the
    iteration blows up to inf or NaN. Return a dict:

        "h"          the last iterate (float64, h0's shape)
        "iters"      the number of steps taken (int)
        "converged"  whether the stopping test was met (bool)
        "residuals"  (iters,) float64, the relative update of every step

    Library: ``minilooped.models.contraction.fixed_point``.
    """
    raise NotImplementedError("ex8_5: fixed_point")
