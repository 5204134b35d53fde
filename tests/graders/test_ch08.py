"""Graders of chapter 8 (exercises/ch08_contractive.py): SCORE's Euler step, Parcae's
zero-order-hold injection, the step sizes that contract, Banach's loop count, a fixed point
by iteration. Oracles: the PyTorch mirror with the same weights (float64), the matrix
exponential of the continuous system, brute force over a grid of step sizes and over n,
linear maps whose fixed point is a linear solve."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

import minilooped as ml
from minilooped.grading.checks import assert_close, assert_equal, check
from minilooped.models import GPT, GPTConfig
from minilooped.models.contraction import euler_gain_bound
from minilooped.torch.models import GPT as TorchGPT

torch.set_num_threads(1)

TINY = dict(vocab_size=32, n_embd=16, n_head=2, block_size=8, dropout=0.0)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------- ex8_1 SCORE's step
def _score_pair(impl, **spec):
    """(student's core model, the mirror), same float64 weights; the core's trunk runs impl.step."""
    torch.manual_seed(0)
    mirror = TorchGPT(GPTConfig(**{**TINY, "variant": "contractive", **spec})).double()
    with torch.no_grad():  # random LayerNorm weights and biases too: every path is exercised
        for p in mirror.parameters():
            p.add_(0.1 * torch.randn_like(p))
    core = GPT(mirror.config).to("float64")
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    core.transformer.trunk.__class__ = impl  # the student's step, the library's everything else
    return core.eval(), mirror.eval()


def _score_check(impl, hint, **spec):
    core, mirror = _score_pair(impl, **spec)
    idx = _rng(1).integers(0, 32, (2, 8))
    logits, _ = core(idx)
    expected, _ = mirror(torch.tensor(idx))
    what = ", ".join(f"{k}={v}" for k, v in spec.items())
    assert_close(logits, expected, f"logits of a contractive model ({what})", hint=hint, rtol=1e-9, atol=1e-10)
    # the loop count is a call-time choice: dt must stay the config's
    logits, _ = core(idx, n_loops=5)
    expected, _ = mirror(torch.tensor(idx), n_loops=5)
    assert_close(logits, expected, f"logits at n_loops=5 ({what})",
                 hint="dt is config.step_size, fixed by the config, not 1 / the loops being run")


@pytest.mark.ex8_1
def test_score_block_reading(impl):
    _score_check(impl, "F is the blocks' output; mix (1 - dt) of h with dt of F(h)",
                 n_layer=1, n_loops=3, dt=0.25, score_f="block")


@pytest.mark.ex8_1
def test_score_branch_reading(impl):
    _score_check(impl, "the branch is what the blocks add: F(h) = blocks(h) - h",
                 n_layer=1, n_loops=3, dt=0.5, score_f="branch")


@pytest.mark.ex8_1
def test_score_with_prelude_and_two_looped_blocks(impl):
    _score_check(impl, "apply every block from loop_start to loop_end, in order, before mixing",
                 n_layer=3, n_prelude=1, n_loops=2, score_f="block")


@pytest.mark.ex8_1
def test_score_dt1_block_is_plain_looping(impl):
    core, _ = _score_pair(impl, n_layer=1, n_loops=3, dt=1.0, score_f="block")
    trunk, blocks = core.transformer.trunk, core.transformer.h
    h = ml.Tensor(_rng(2).standard_normal((2, 8, 16)))
    out = trunk.step(h, None, blocks, 0)
    check(isinstance(out, ml.Tensor), f"step must return a Tensor, got {type(out).__name__}")
    assert_close(out, blocks[0](h), "dt = 1, F the whole block: the step is the block itself",
                 hint="(1 - 1) h + 1 F(h) = F(h)", rtol=1e-12, atol=1e-12)
    trunk.trace = []
    trunk.step(h, None, blocks, 0)
    check(len(trunk.trace) == 1, "step must record the new state once (self.record(h))")
    trunk.trace = None


# ------------------------------------------------------ ex8_2 zero-order hold
def _injection(impl, C=6, seed=0):
    ml.manual_seed(seed)
    inj = impl(GPTConfig(**{**TINY, "n_embd": C})).to("float64")
    r = _rng(seed)
    inj.a.data[...] = r.normal(0.0, 1.5, C)
    inj.dt_bias.data[...] = r.normal(0.0, 1.5, C)
    inj.B.weight.data[...] = r.standard_normal((C, C)) / math.sqrt(C)
    return inj


def _zoh(a, dt_bias):
    """The exact solution of dh/ds = A h over one step Delta, by the matrix exponential."""
    delta = np.log1p(np.exp(dt_bias))
    return np.diag(scipy.linalg.expm(np.diag(delta) @ np.diag(-np.exp(a)))), delta


@pytest.mark.ex8_2
def test_A_bar_is_the_matrix_exponential(impl):
    inj = _injection(impl)
    got = inj.A_bar()
    check(isinstance(got, ml.Tensor), f"A_bar must return a Tensor (C,), got {type(got).__name__}",
          hint="build it from Tensor ops on self.a and self.dt_bias so it has a gradient")
    expected, _ = _zoh(inj.a.numpy(), inj.dt_bias.numpy())
    assert_close(got, expected, "A_bar (the exact solution of dh/ds = A h over one step Delta)",
                 hint="Delta = softplus(dt_bias), A = -exp(a); integrate the linear system exactly")


@pytest.mark.ex8_2
def test_A_bar_stays_in_the_unit_interval(impl):
    inj = _injection(impl, C=8)
    inj.a.data[...] = np.array([-6.0, -2.0, 0.0, 1.0, 2.0, -3.0, 0.5, -1.0])
    inj.dt_bias.data[...] = np.array([-6.0, 3.0, -2.0, 0.0, 2.0, -4.0, 1.0, 4.0])
    a_bar = inj.A_bar().numpy()
    check(bool(np.all((a_bar > 0) & (a_bar < 1))), f"A_bar must lie in (0, 1) whatever a and dt_bias: got {a_bar}",
          hint="a negative real A and a positive Delta: exp of a negative number")


@pytest.mark.ex8_2
def test_injection_forward_and_gradients(impl):
    inj = _injection(impl, seed=3)
    r = _rng(4)
    h, e = r.standard_normal((2, 3, 6)), r.standard_normal((2, 3, 6))
    th, te = ml.Tensor(h, requires_grad=True), ml.Tensor(e, requires_grad=True)
    out = inj(th, te)
    check(isinstance(out, ml.Tensor), f"forward must return a Tensor, got {type(out).__name__}")
    a_bar, delta = _zoh(inj.a.numpy(), inj.dt_bias.numpy())
    B = inj.B.weight.numpy()
    expected = a_bar * h + delta * (e @ B.T)
    assert_close(out, expected, "u = A_bar h + B_bar e",
                 hint="B_bar is the Euler approximation of the exact input matrix: Delta times B, per channel")
    out.backward(np.ones_like(expected))
    assert_close(th.grad, np.broadcast_to(a_bar, h.shape), "gradient of h", hint="use Tensor ops, no .data")
    check(inj.a.grad is not None and inj.dt_bias.grad is not None,
          "a and dt_bias must receive gradients: compute A_bar and Delta from them with Tensor ops")
    # d/da of sum(A_bar * h): A_bar * (-Delta exp(a)) * sum over (B, T) of h
    expected_da = a_bar * (-delta * np.exp(inj.a.numpy())) * h.sum(axis=(0, 1))
    assert_close(inj.a.grad, expected_da, "gradient of a", hint="A_bar = exp(-Delta exp(a))")


# ------------------------------------------------------ ex8_3 contracting step sizes
@pytest.mark.ex8_3
@pytest.mark.parametrize("lip", [0.0, 0.3, 0.75, 0.99])
def test_max_dt_against_a_grid(impl, lip):
    got = impl(lip)
    check(isinstance(got, (int, float)) and not isinstance(got, bool), f"return a float, got {type(got).__name__}")
    grid = np.linspace(1e-4, 3.0, 30001)
    ok = np.array([euler_gain_bound(float(dt), lip) < 1 for dt in grid])
    expected = grid[ok].max()
    check(abs(got - expected) < 2e-4, f"lip={lip}: got {got}, but the bound |1 - dt| + dt lip is below 1 up to "
          f"dt = {expected:.4f} (a grid of step sizes)",
          hint="treat dt <= 1 and dt > 1 apart: |1 - dt| changes sign")


@pytest.mark.ex8_3
@pytest.mark.parametrize("lip", [1.0, 1.5, 4.0])
def test_no_dt_contracts_when_lip_is_at_least_one(impl, lip):
    assert_equal(float(impl(lip)), 0.0, f"max_contractive_dt({lip})",
                 hint="with Lip(F) >= 1 the bound is >= 1 for every dt > 0")


@pytest.mark.ex8_3
def test_max_dt_refuses_bad_input(impl):
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            impl(bad)


# ------------------------------------------------------ ex8_4 Banach's loop count
def _brute(q, first, tol):
    n = 0
    while q ** n * first / (1 - q) > tol:
        n += 1
    return n


@pytest.mark.ex8_4
@pytest.mark.parametrize("q, first, tol", [(0.5, 1.0, 1e-3), (0.9, 2.0, 1e-6), (0.25, 3.0, 0.5),
                                           (0.99, 0.1, 1e-4), (0.5, 1.0, 0.25), (0.8, 0.02, 1.0),
                                           (0.0, 1.0, 1e-3), (0.5, 0.0, 1e-9)])
def test_iterations_against_brute_force(impl, q, first, tol):
    got = impl(q, first, tol)
    check(isinstance(got, (int, np.integer)) and not isinstance(got, bool), f"return an int, got {type(got).__name__}")
    assert_equal(int(got), _brute(q, first, tol), f"iterations_for_tolerance({q}, {first}, {tol})",
                 hint="the bound after n loops is q^n ||h_1 - h_0|| / (1 - q); the smallest such n, 0 included")


@pytest.mark.ex8_4
def test_iterations_at_exact_powers(impl):
    # q^n first / (1 - q) == tol exactly at n = 3: the bound holds with equality
    assert_equal(int(impl(0.5, 1.0, 0.25)), 3, "iterations_for_tolerance(0.5, 1.0, 0.25)",
                 hint="<= tol, not < tol; and beware logarithms that round to 2.9999999")


@pytest.mark.ex8_4
def test_iterations_refuses_bad_input(impl):
    for args in ((1.0, 1.0, 1e-3), (-0.1, 1.0, 1e-3), (0.5, -1.0, 1e-3), (0.5, 1.0, 0.0)):
        with pytest.raises(ValueError):
            impl(*args)


# ------------------------------------------------------ ex8_5 a fixed point by iteration
def _linear_contraction(n=5, q=0.6, seed=0):
    r = _rng(seed)
    M = r.standard_normal((n, n))
    M *= q / np.linalg.norm(M, 2)  # spectral norm q: a contraction
    b = r.standard_normal(n)
    return M, b, np.linalg.solve(np.eye(n) - M, b)


@pytest.mark.ex8_5
def test_fixed_point_of_a_linear_contraction(impl):
    M, b, h_star = _linear_contraction()
    out = impl(lambda h: M @ h + b, np.zeros(5), tol=1e-10, max_iters=500)
    check(isinstance(out, dict), f"return a dict, got {type(out).__name__}")
    for key in ("h", "iters", "converged", "residuals"):
        check(key in out, f"the result has no {key!r}")
    check(bool(out["converged"]) is True, "a contraction of factor 0.6 converges within 500 steps")
    assert_close(out["h"], h_star, "the fixed point h* = (I - M)^-1 b", rtol=1e-8, atol=1e-9)
    res = np.asarray(out["residuals"])
    assert_equal(len(res), int(out["iters"]), "len(residuals) == iters")
    check(res[-1] <= 1e-10 and (len(res) < 2 or res[-2] > 1e-10),
          "stop at the first step whose relative update is <= tol, not before or after",
          hint="relative update = ||h_new - h|| / ||h_new||")


@pytest.mark.ex8_5
def test_relative_not_absolute_update(impl):
    # a large fixed point (norm ~1e6): tol=1e-6 relative is met long before 1e-6 absolute would be
    M, b, h_star = _linear_contraction(q=0.5, seed=1)
    out = impl(lambda h: M @ h + 1e6 * b, np.zeros(5), tol=1e-6, max_iters=200)
    h = np.zeros(5)
    for n in range(1, 201):
        new = M @ h + 1e6 * b
        rel = np.linalg.norm(new - h) / np.linalg.norm(new)
        h = new
        if rel <= 1e-6:
            break
    assert_equal(int(out["iters"]), n, "iterations with a relative stopping test",
                 hint="divide the update's norm by the new state's norm")


@pytest.mark.ex8_5
def test_fixed_point_gives_up_on_an_expansion(impl):
    out = impl(lambda h: 2.0 * h + 1.0, np.zeros(3), tol=1e-8, max_iters=50)
    check(bool(out["converged"]) is False, "h <- 2h + 1 expands: converged must be False")
    assert_equal(int(out["iters"]), 50, "iters when the test is never met", hint="run max_iters steps")
    blown = impl(lambda h: h * h + 10.0, np.ones(2), tol=1e-8, max_iters=100)
    check(bool(blown["converged"]) is False and int(blown["iters"]) < 100,
          "h <- h^2 + 10 overflows to inf within a few steps: stop there (no exception), converged False",
          hint="check np.isfinite on the relative update")
