"""The arithmetic of contractions, for contractive depth (chapter 8).

A loop h <- step(h) whose step is a contraction, ||step(a) - step(b)|| <= q ||a - b||
with q < 1, has one fixed point h*, and iterating from anywhere reaches it (Banach's
fixed-point theorem). These functions turn that into numbers:

    euler_gain_bound(dt, lip)                   q of SCORE's h <- (1 - dt) h + dt F(h), from Lip(F)
    max_contractive_dt(lip)                     the step sizes for which that bound is below 1
    iterations_for_tolerance(q, first_step, tol)   loops that Banach's a-priori bound asks for
    fixed_point(step, h0, tol, max_iters)       iterate to the fixed point (Deep Equilibrium's forward)

NumPy only (like sampler.py), so the core, the mirror and the book share them.
"""
import math

import numpy as np


def _check_lip(lip):
    if not (isinstance(lip, (int, float)) and math.isfinite(lip) and lip >= 0):
        raise ValueError(f"lip={lip!r}: a Lipschitz constant is a finite number >= 0.")


def euler_gain_bound(dt, lip):
    """An upper bound on the Lipschitz constant of h -> (1 - dt) h + dt F(h) when F's is lip.

    The triangle inequality on the two terms: |1 - dt| + dt lip (dt > 0). Below 1 the step
    is a contraction; at or above 1 the bound says nothing (the step may still contract).
    """
    _check_lip(lip)
    if not dt > 0:
        raise ValueError(f"dt={dt!r}: the Euler step size must be > 0.")
    return abs(1 - dt) + dt * lip


def max_contractive_dt(lip):
    """The supremum of the step sizes dt > 0 for which euler_gain_bound(dt, lip) < 1.

    Every dt in (0, max_contractive_dt(lip)) gives a contraction by the bound; 0.0 when no
    dt does (lip >= 1: (1 - dt) + dt lip >= 1 for dt <= 1, and it only grows beyond).
    For dt <= 1 the bound is 1 - dt (1 - lip), below 1 iff lip < 1; for dt > 1 it is
    dt (1 + lip) - 1, below 1 iff dt < 2 / (1 + lip).
    """
    _check_lip(lip)
    return 2.0 / (1.0 + lip) if lip < 1 else 0.0


def iterations_for_tolerance(q, first_step, tol):
    """The fewest loops n >= 0 after which Banach's a-priori bound guarantees ||h_n - h*|| <= tol.

    For a contraction with factor q (0 <= q < 1), ||h_n - h*|| <= q^n / (1 - q) ||h_1 - h_0||,
    with first_step = ||h_1 - h_0||. Returns the smallest n with q^n first_step / (1 - q) <= tol
    (an int; 0 when the bound already holds at h_0).
    """
    if not (0 <= q < 1):
        raise ValueError(f"q={q!r}: a contraction factor is in [0, 1).")
    if not first_step >= 0 or not tol > 0:
        raise ValueError(f"first_step={first_step!r} must be >= 0 and tol={tol!r} > 0.")
    bound = first_step / (1 - q)  # the bound at n = 0
    if bound <= tol:
        return 0
    if q == 0:
        return 1  # h_1 is the fixed point
    n = max(1, math.ceil(math.log(tol / bound) / math.log(q)))
    while n > 1 and q ** (n - 1) * bound <= tol:  # the logarithms round: settle on the exact n
        n -= 1
    while q ** n * bound > tol:
        n += 1
    return n


def fixed_point(step, h0, tol=1e-6, max_iters=1000):
    """Iterate h_{k+1} = step(h_k) from h0 (a NumPy array) until the relative update
    ||h_{k+1} - h_k|| / ||h_{k+1}|| is at most tol, or max_iters steps.

    The relative update is what diagnostics.hidden_norms calls rel_update, so a trained
    model's loop and this iteration are read on the same scale. For a contraction with
    factor q the updates shrink at least like q^k, and the last update bounds the distance
    to the fixed point: ||h_{k+1} - h*|| <= q / (1 - q) ||h_{k+1} - h_k||.
    Returns {"h": the last iterate, "iters": steps taken, "converged": bool,
    "residuals": (iters,) the relative update of every step}.
    """
    if not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters={max_iters!r} must be an integer >= 1.")
    if not tol > 0:
        raise ValueError(f"tol={tol!r} must be > 0.")
    h = np.asarray(h0, dtype=np.float64)
    residuals = []
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging iteration ends in inf/NaN, by design
        for _ in range(max_iters):
            new = np.asarray(step(h), dtype=np.float64)
            size = np.linalg.norm(new)
            residuals.append(np.linalg.norm(new - h) / size if size > 0 else np.linalg.norm(new - h))
            h = new
            if not np.isfinite(residuals[-1]):
                break  # diverged: no fixed point this way
            if residuals[-1] <= tol:
                return {"h": h, "iters": len(residuals), "converged": True, "residuals": np.array(residuals)}
    return {"h": h, "iters": len(residuals), "converged": False, "residuals": np.array(residuals)}


__all__ = ["euler_gain_bound", "max_contractive_dt", "iterations_for_tolerance", "fixed_point"]
