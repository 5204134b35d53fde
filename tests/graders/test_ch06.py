"""Graders of chapter 6 (exercises/ch06_why_loops_break.py): the linear loop's fixed point
and stable region, the residual loop's norm-growth bound, sigma_max by power iteration.
Oracles: the loop itself run for many steps (brute force), the scalar map that attains the
bound, random Lipschitz maps that must stay under it, and NumPy's SVD."""
import math

import numpy as np
import pytest

from minilooped.grading.checks import assert_close, check


def _run(A, b, x0, n):
    x = np.asarray(x0, dtype=np.float64)
    for _ in range(n):
        x = A @ x + b
    return x


def _random_matrix(rng, d, rho):
    """A non-symmetric (d, d) matrix with spectral radius rho."""
    A = rng.standard_normal((d, d))
    return A * rho / np.max(np.abs(np.linalg.eigvals(A)))


# ---------------------------------------------------------------- ex6_1 fixed point
@pytest.mark.ex6_1
def test_fixed_point_is_a_fixed_point(impl):
    rng = np.random.default_rng(0)
    for d, rho in ((1, 0.5), (3, 0.9), (8, 0.3), (8, 2.5), (5, 40.0)):
        A, b = _random_matrix(rng, d, rho), rng.standard_normal(d)
        x = impl(A, b)
        check(x is not None and np.shape(x) == (d,), f"return a ({d},) array, got {np.shape(x)}")
        assert_close(A @ x + b, x, f"A x* + b for d = {d}, rho(A) = {rho}", rtol=1e-8, atol=1e-9,
                     hint="the fixed point is the state that one more loop leaves unchanged, also "
                          "when the loop does not converge to it (rho(A) > 1)")


@pytest.mark.ex6_1
def test_fixed_point_is_where_a_contracting_loop_goes(impl):
    rng = np.random.default_rng(1)
    A, b = _random_matrix(rng, 4, 0.6), rng.standard_normal(4)
    assert_close(impl(A, b), _run(A, b, rng.standard_normal(4), 400), "x* against 400 loops from a random x_0",
                 rtol=1e-8, atol=1e-10)
    assert_close(impl(2.0 * np.eye(3), np.ones(3)), -np.ones(3), "x* of x <- 2 x + 1 (a loop that runs away)",
                 hint="solve x = A x + b; do not run the loop")


@pytest.mark.ex6_1
def test_no_fixed_point_when_one_is_an_eigenvalue(impl):
    R = np.array([[0.0, -1.0], [1.0, 0.0]])  # a rotation: eigenvalues +-i, never 1
    assert_close(impl(R, np.ones(2)), np.linalg.solve(np.eye(2) - R, np.ones(2)), "x* of a rotation")
    singular = {"A = I (the plain residual update h <- h + b)": np.eye(3),
                "A with eigenvalues 1 and 0.5": np.array([[1.0, 3.0], [0.0, 0.5]])}
    for what, A in singular.items():
        with pytest.raises(ValueError):
            impl(A, np.ones(len(A)))
            raise AssertionError(f"{what}: no unique fixed point, so raise ValueError; got a result")


# ---------------------------------------------------------------- ex6_2 stable region
def _converges(A, s, steps=3000):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(len(A))
    xstar = np.linalg.solve(np.eye(len(A)) - s * A, np.ones(len(A)))
    for _ in range(steps):
        x = s * A @ x + np.ones(len(A))
        if not np.all(np.isfinite(x)) or np.linalg.norm(x) > 1e12:
            return False
    return np.linalg.norm(x - xstar) < 1e-6 * max(1.0, np.linalg.norm(xstar))


@pytest.mark.ex6_2
def test_stable_scale_of_diagonal_and_rotation(impl):
    assert_close(float(impl(np.diag([0.5, -2.0, 1.0]))), 0.5, "s* of diag(0.5, -2, 1)",
                 hint="a negative eigenvalue counts by its size: x <- -2 x alternates in sign and grows")
    theta = 0.7
    R = 1.25 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    assert_close(float(impl(R)), 0.8, "s* of 1.25 x a rotation (complex eigenvalues of size 1.25)")


@pytest.mark.ex6_2
def test_stable_scale_of_a_non_normal_matrix(impl):
    A = np.array([[0.5, 10.0], [0.0, 0.5]])  # ||A||_2 ~ 10.03, eigenvalues 0.5
    s = float(impl(A))
    assert_close(s, 2.0, "s* of [[0.5, 10], [0, 0.5]]",
                 hint="||A||_2 ~ 10 gives a safe scale, not the largest: below 1/||A||_2 every step shrinks "
                      "the error; the loop still converges up to a larger s, after growing for a while")
    check(_converges(A, 0.98 * s) and not _converges(A, 1.02 * s),
          "the loop must converge just below s* and diverge just above")
    check(math.isinf(float(impl(np.array([[0.0, 1.0], [0.0, 0.0]])))),
          "s* of the nilpotent [[0, 1], [0, 0]] (A^2 = 0): every scale converges, return math.inf")


@pytest.mark.ex6_2
def test_stable_scale_by_brute_force(impl):
    rng = np.random.default_rng(2)
    for d in (2, 3, 6):
        for _ in range(3):
            A = rng.standard_normal((d, d))
            s = float(impl(A))
            check(np.isfinite(s) and s > 0, f"s* of a random {d}x{d} matrix must be a positive number, got {s}")
            check(_converges(A, 0.97 * s), f"random {d}x{d} matrix: x <- s A x + b must converge at s = 0.97 s*")
            check(not _converges(A, 1.03 * s), f"random {d}x{d} matrix: x <- s A x + b must not converge at "
                                               "s = 1.03 s* (s* is the largest stable scale, not a safe one)")


# ---------------------------------------------------------------- ex6_3 norm-growth bound
@pytest.mark.ex6_3
def test_bound_is_attained_by_the_scalar_map(impl):
    for h0, L, f0, n in ((1.0, 0.1, 0.5, 12), (2.0, 1.0, 0.0, 8), (0.0, 0.3, 1.0, 20), (3.0, 0.0, 0.25, 10)):
        b = impl(h0, L, f0, n)
        check(b is not None and np.shape(b) == (n + 1,), f"return a ({n + 1},) array for n_loops = {n}, "
                                                          f"got shape {np.shape(b)}")
        h, worst = h0, [h0]
        for _ in range(n):
            h = h + (L * h + f0)  # f(h) = L h + f0: L-Lipschitz, |f(0)| = f0
            worst.append(h)
        assert_close(b, np.array(worst), f"the bound for h0 = {h0}, L = {L}, f0 = {f0}, t = 0..{n}", rtol=1e-9,
                     hint="some f reaches the bound: f(h) = L h + f0 on the positive half-line; and L = 0 means "
                          "f is constant")


@pytest.mark.ex6_3
def test_bound_holds_for_random_lipschitz_maps(impl):
    rng = np.random.default_rng(3)
    d, n = 16, 15
    for trial in range(6):
        W1, W2 = rng.standard_normal((d, d)) * 0.2, rng.standard_normal((d, d)) * 0.2
        c1, c2 = rng.standard_normal(d), rng.standard_normal(d) * 0.3

        def f(h):
            return W2 @ np.tanh(W1 @ h + c1) + c2  # tanh is 1-Lipschitz

        L = np.linalg.norm(W2, 2) * np.linalg.norm(W1, 2)
        h = rng.standard_normal(d)
        bound = np.asarray(impl(float(np.linalg.norm(h)), float(L), float(np.linalg.norm(f(np.zeros(d)))), n))
        for t in range(n + 1):
            check(np.linalg.norm(h) <= bound[t] * (1 + 1e-12),
                  f"trial {trial}: ||h_{t}|| = {np.linalg.norm(h):.6g} exceeds your bound {bound[t]:.6g}")
            h = h + f(h)


@pytest.mark.ex6_3
def test_bound_rejects_bad_inputs(impl):
    for args in ((-1.0, 0.1, 0.0, 3), (1.0, -0.1, 0.0, 3), (1.0, 0.1, float("nan"), 3), (1.0, float("inf"), 0.0, 3)):
        with pytest.raises(ValueError):
            impl(*args)
            raise AssertionError(f"residual_norm_bound{args}: raise ValueError")


# ---------------------------------------------------------------- ex6_4 power iteration
def _as_maps(A, shape):
    return (lambda v: (A @ np.reshape(v, -1)).reshape(shape),
            lambda u: (A.T @ np.reshape(u, -1)).reshape(shape))


@pytest.mark.ex6_4
def test_power_iteration_on_known_singular_values(impl):
    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    V, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    A = U @ np.diag([3.0, 2.0] + [1.0] * 10) @ V.T
    r = impl(*_as_maps(A, (3, 4)), (3, 4), 300, 1e-12, 0)
    check(isinstance(r, dict) and {"sigma", "iters", "converged", "history"} <= set(r),
          "return a dict with keys sigma, iters, converged, history")
    assert_close(float(r["sigma"]), 3.0, "sigma_max of a 12x12 map with singular values 3, 2, 1, ...", rtol=1e-8)
    check(bool(r["converged"]) and 1 <= int(r["iters"]) <= 300, f"converged within 300 iterations, got {r['iters']}")
    check(len(np.asarray(r["history"])) == int(r["iters"]), "history has one estimate per iteration")


@pytest.mark.ex6_4
def test_power_iteration_is_not_the_spectral_radius(impl):
    rng = np.random.default_rng(5)
    A = np.triu(rng.standard_normal((10, 10)), k=1) * 3.0 + np.diag(np.full(10, 0.5))  # eigenvalues all 0.5
    r = impl(*_as_maps(A, (10,)), (10,), 2000, 1e-12, 1)
    assert_close(float(r["sigma"]), np.linalg.svd(A, compute_uv=False)[0], "sigma_max of a non-normal map "
                 "(every eigenvalue 0.5)", rtol=1e-6,
                 hint="iterating v <- J v finds the largest |eigenvalue|; the largest gain ||J v|| / ||v|| is "
                      "found by iterating a map built from J and J^T")
    B = np.diag([-4.0, 1.0, 0.5])  # a negative top singular direction
    assert_close(float(impl(*_as_maps(B, (3,)), (3,), 500, 1e-12, 0)["sigma"]), 4.0, "sigma_max of diag(-4, 1, 0.5)")


@pytest.mark.ex6_4
def test_power_iteration_stops_and_checks(impl):
    rng = np.random.default_rng(6)
    A = rng.standard_normal((20, 20))
    r = impl(*_as_maps(A, (20,)), (20,), 3, 1e-15, 0)
    check(int(r["iters"]) == 3 and not bool(r["converged"]), "with iters = 3 and a tiny tol: 3 iterations, "
                                                             "converged False")
    exact = np.linalg.svd(A, compute_uv=False)[0]
    check(float(r["sigma"]) <= exact * (1 + 1e-12), "an unconverged estimate is below sigma_max "
                                                    "(a Rayleigh quotient never overshoots)")
    with pytest.raises(ValueError):
        impl(*_as_maps(A, (20,)), (20,), 0, 1e-6, 0)
        raise AssertionError("iters = 0: raise ValueError")
