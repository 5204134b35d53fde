"""The loop as a dynamical system: the linear toy and the bounds of chapter 6 (Why loops break).

NumPy only, on small host arrays (no tensors, no autograd): these are the pen-and-paper models
the chapter measures the trained loop against.

    linear_loop(A, b, x0, n_loops)        x_0, x_1, ..., x_n of x <- A x + b       (n + 1, d)
    linear_fixed_point(A, b)              x* = A x* + b                            (d,)
    stable_scale(A)                       the s* below which x <- s A x + b converges from any x_0
    residual_norm_bound(h0, L, f0, n)     the largest ||h_t|| that h <- h + f(h) allows when f
                                          is L-Lipschitz with ||f(0)|| = f0               (n + 1,)

Why a linear toy: near a state h, one loop step h <- step(h) acts on small perturbations as
its Jacobian J = d step / d h does, so x <- A x + b with A = J is the loop seen from close up.
Its eigenvalues against the unit circle decide whether the loop settles (all inside), drifts
(one on the circle, e.g. A = I: the plain residual stream, Parcae's "marginal" additive
injection, arXiv 2604.12946) or explodes (one outside); its largest singular value decides
how much a single step can amplify, which is what the diagnostics' Jacobian spectral norm
measures on a trained block (diagnostics.py).
"""
import math

import numpy as np


def _square(A):
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (d, d) matrix, got shape {A.shape}.")
    return A


def _vector(b, d, name):
    b = np.asarray(b, dtype=np.float64)
    if b.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) to match A, got {b.shape}.")
    return b


def linear_loop(A, b, x0, n_loops):
    """The trajectory of the linear loop x_{t+1} = A x_t + b: rows x_0, x_1, ..., x_n, (n + 1, d)."""
    A = _square(A)
    b, x = _vector(b, len(A), "b"), _vector(x0, len(A), "x0")
    if not isinstance(n_loops, int) or n_loops < 0:
        raise ValueError(f"n_loops={n_loops!r} must be an integer >= 0.")
    xs = [x]
    for _ in range(n_loops):
        x = A @ x + b  # (d,)
        xs.append(x)
    return np.array(xs)


def linear_fixed_point(A, b):
    """The fixed point x* of x <- A x + b: the state one more loop leaves unchanged, (d,).

    x* = A x* + b  <=>  (I - A) x* = b, a linear system with one solution exactly when 1 is
    not an eigenvalue of A. If it is (A = I: the plain residual update with a constant
    branch), there is none or a whole line of them: a ValueError. Whether the loop ever
    reaches x* is another question (stable_scale). Exercise 6.1.
    """
    A = _square(A)
    b = _vector(b, len(A), "b")
    I_minus_A = np.eye(len(A)) - A  # (d, d)
    # 1 is an eigenvalue of A iff I - A is singular; test it relative to A's size
    smallest = np.linalg.svd(I_minus_A, compute_uv=False)[-1]
    if smallest <= 1e-12 * max(1.0, np.linalg.norm(A, 2)):
        raise ValueError("1 is an eigenvalue of A (I - A is singular): x <- A x + b has no "
                         "unique fixed point.")
    return np.linalg.solve(I_minus_A, b)


def stable_scale(A):
    """The largest s* such that x <- s A x + b converges, from every x_0 and for every b,
    for all 0 <= s < s*: s* = 1 / rho(A), rho(A) = max |eigenvalue of A| (inf when rho = 0).

    The error e_t = x_t - x* obeys e_{t+1} = s A e_t, so e_t = (s A)^t e_0, which goes to 0
    for every e_0 iff every eigenvalue of s A lies strictly inside the unit circle. The
    spectral norm ||A||_2 >= rho(A) would give the safe but smaller 1 / ||A||_2: below it
    every single step shrinks the error; between the two the error may grow for a while
    before it decays (a non-normal A). Exercise 6.2.
    """
    rho = float(np.max(np.abs(np.linalg.eigvals(_square(A)))))
    return math.inf if rho == 0.0 else 1.0 / rho


def residual_norm_bound(h0_norm, lipschitz, f0_norm, n_loops):
    """The tightest bound on ||h_t||, t = 0 .. n, for the residual loop h_{t+1} = h_t + f(h_t)
    when all we know is ||h_0|| = h0_norm, ||f(0)|| = f0_norm and that f is L-Lipschitz.

    ||f(h)|| <= ||f(0)|| + L ||h||, so ||h_{t+1}|| <= (1 + L) ||h_t|| + f0: the bound
    b_{t+1} = (1 + L) b_t + f0, b_0 = h0_norm, unrolled:

        b_t = (1 + L)^t h0 + f0 ((1 + L)^t - 1) / L        (L > 0)
        b_t = h0 + t f0                                      (L = 0: f constant, linear growth)

    Attained by f(h) = L h + c on a ray (the scalar case), so no smaller bound holds for
    every such f. A pre-LN block's branch f(h) = g(LN(h)) is bounded, ||f|| <= M, whatever
    its Lipschitz constant: then ||h_t|| <= ||h_0|| + t M, linear in the loops. Returns
    (n + 1,) float64. Exercise 6.3.
    """
    for name, v in (("h0_norm", h0_norm), ("lipschitz", lipschitz), ("f0_norm", f0_norm)):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}={v!r} must be a finite number >= 0.")
    if not isinstance(n_loops, int) or n_loops < 0:
        raise ValueError(f"n_loops={n_loops!r} must be an integer >= 0.")
    t = np.arange(n_loops + 1, dtype=np.float64)
    if lipschitz == 0:
        return h0_norm + t * f0_norm
    grow = (1.0 + lipschitz) ** t  # (n + 1,)
    return grow * h0_norm + f0_norm * np.expm1(t * np.log1p(lipschitz)) / lipschitz


__all__ = ["linear_loop", "linear_fixed_point", "stable_scale", "residual_norm_bound"]
