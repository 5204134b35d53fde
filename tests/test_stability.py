"""models/stability.py, the linear toy and the residual loop's bound of chapter 6 (the exercise
graders in tests/graders/test_ch06.py test the rest against brute force)."""
import math

import numpy as np
import pytest

from minilooped.models import stability


def test_linear_loop_is_the_iteration_and_reaches_the_fixed_point():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3))
    A *= 0.7 / np.max(np.abs(np.linalg.eigvals(A)))
    b, x0 = rng.standard_normal(3), rng.standard_normal(3)
    xs = stability.linear_loop(A, b, x0, 200)
    assert xs.shape == (201, 3)
    np.testing.assert_array_equal(xs[0], x0)
    np.testing.assert_allclose(xs[2], A @ (A @ x0 + b) + b, rtol=1e-14)
    np.testing.assert_allclose(xs[-1], stability.linear_fixed_point(A, b), rtol=1e-10)


def test_stable_scale_and_bound_edge_cases():
    assert stability.stable_scale(np.zeros((2, 2))) == math.inf
    assert stability.stable_scale(np.eye(4)) == 1.0  # the residual update sits on the unit circle
    np.testing.assert_allclose(stability.residual_norm_bound(1.0, 0.0, 0.5, 3), [1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(stability.residual_norm_bound(1.0, 1e-12, 0.5, 3), [1.0, 1.5, 2.0, 2.5], rtol=1e-9)


@pytest.mark.parametrize("call", [
    lambda: stability.linear_loop(np.ones((2, 3)), np.ones(2), np.ones(2), 1),
    lambda: stability.linear_loop(np.eye(2), np.ones(3), np.ones(2), 1),
    lambda: stability.linear_loop(np.eye(2), np.ones(2), np.ones(2), -1),
    lambda: stability.linear_fixed_point(np.eye(2), np.ones(2)),
    lambda: stability.residual_norm_bound(1.0, 0.1, 0.0, 2.5),
])
def test_bad_input_is_a_clear_error(call):
    with pytest.raises(ValueError):
        call()
