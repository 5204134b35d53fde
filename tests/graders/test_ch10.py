"""Graders of chapter 10 (exercises/ch10_test_time.py): the saturating depth-curve fit and
its refusals, the loops to come within eps of L_inf, adaptive exit's halting rule, and the
loop count at equal FLOPs. Oracles: curves made from known parameters (the fit must find
them), a brute-force scan over loop counts, KL and max-probability computed in float64 NumPy
from the same log-probabilities, and FLOPs counted by the library at the answer (and at its
neighbours) for every looped variant."""
import math

import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.grading.checks import assert_close, assert_equal, check
from minilooped.models import GPTConfig
from minilooped.torch.models import GPT as TorchGPT
from minilooped.training.evaluation import saturating_exp
from minilooped.training.mfu import forward_flops_per_token

torch.set_num_threads(1)


# ---------------------------------------------------------------- ex10_1 the saturating fit
DEPTHS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]


@pytest.mark.ex10_1
@pytest.mark.parametrize("L_inf,A,tau", [(1.50, 0.80, 2.0), (2.10, 0.30, 0.7), (1.80, 1.50, 5.0)])
def test_fit_recovers_known_parameters(impl, L_inf, A, tau):
    losses = saturating_exp(DEPTHS, L_inf, A, tau)
    fit = impl(DEPTHS, list(losses))
    check(isinstance(fit, dict) and fit.get("fitted") is True,
          f"an exact saturating curve (L_inf={L_inf}, A={A}, tau={tau}) must be fitted; got {fit!r}"[:400],
          hint="curve_fit needs a starting point near the answer: for a fixed tau the model is linear in "
               "(L_inf, A), so least squares gives them exactly; try a grid of tau")
    check(fit.get("reason") is None, "a fitted result has reason None")
    for key, want in (("L_inf", L_inf), ("A", A), ("tau", tau)):
        assert_close(fit.get(key), want, f"fitted {key}", rtol=1e-4, atol=1e-6)
    check(set(fit.get("stderr", {})) >= {"L_inf", "A", "tau"}, "stderr holds L_inf, A and tau")
    assert_close(fit["rms_residual"], 0.0, "RMS residual of an exact curve", atol=1e-6)
    check(len(fit.get("residuals", [])) == len(DEPTHS), "one residual per depth")


@pytest.mark.ex10_1
def test_fit_noisy_unordered_curve(impl):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(DEPTHS))
    T = np.array(DEPTHS)[order]
    noise = rng.normal(0, 2e-4, len(T))
    L = saturating_exp(T, 1.7, 0.6, 3.0) + noise
    fit = impl(list(T), list(L))
    check(fit.get("fitted") is True, f"a noisy saturating curve (noise 2e-4 nats) must be fitted; got {fit!r}"[:400])
    for key, want, tol in (("L_inf", 1.7, 2e-3), ("A", 0.6, 1e-2), ("tau", 3.0, 0.1)):
        check(abs(fit[key] - want) < tol, f"fitted {key} = {fit[key]:.5f}, expected {want} within {tol}",
              hint="depths may come in any order")
    sorted_resid = (L - saturating_exp(T, fit["L_inf"], fit["A"], fit["tau"]))[np.argsort(T)]
    assert_close(fit["residuals"], sorted_resid, "residuals, by increasing depth", atol=1e-7)
    assert_close(fit["rms_residual"], np.sqrt(np.mean(sorted_resid ** 2)), "RMS residual", atol=1e-9)
    for key in ("L_inf", "A", "tau"):  # the standard errors of a well-determined fit are small and positive
        e = fit["stderr"][key]
        check(e is not None and 0 < e < 0.2 * abs(fit[key]) + 1e-3, f"stderr of {key} = {e}: expected small, positive")


def _refused(fit, what):
    check(isinstance(fit, dict) and fit.get("fitted") is False, f"{what}: expected no fit, got {fit!r}"[:400],
          hint="return {'fitted': False, 'reason': ...} when a fit would not mean anything")
    check(isinstance(fit.get("reason"), str) and len(fit["reason"]) > 10, f"{what}: give a reason in words")


@pytest.mark.ex10_1
def test_fit_refusals(impl):
    _refused(impl([1, 2, 4], [2.0, 1.9, 1.85]), "3 depths")
    _refused(impl([1, 2, 4, 8], [2.0, float("nan"), 1.85, 1.84]), "a NaN loss")
    _refused(impl([1, 2, 4, 8, 16], [1.80004, 1.8, 1.80002, 1.80009, 1.80001]), "a flat curve (all within 1e-4)")
    rising = [2.0, 1.8, 1.75, 1.76, 1.8, 1.9]
    _refused(impl([1, 2, 4, 8, 16, 32], rising), "a curve whose deepest loss is 0.15 above the lowest")
    fit = impl([1, 2, 4, 8, 16, 32], rising, rise_tol=0.5)  # the same curve with a lenient rise_tol
    check(fit.get("reason") is None or "rise" not in fit["reason"],
          f"with rise_tol=0.5 a rise of 0.15 nats is tolerated; got {fit.get('reason')!r}")
    _refused(impl([1, 2, 4, 8, 16], [1.8, 1.81, 1.83, 1.85, 1.85]), "a curve that only climbs")


@pytest.mark.ex10_1
def test_fit_refuses_undetermined_parameters(impl):
    # saturated before the first depth: tau = 0.05 loops, so every point from T = 1 on is L_inf
    # up to noise; any small tau fits, and the standard errors say so
    rng = np.random.default_rng(1)
    L = saturating_exp(DEPTHS, 1.6, 5.0, 0.05) + rng.normal(0, 3e-4, len(DEPTHS))
    L[-1] = min(L)  # not a "rise"
    _refused(impl(DEPTHS, list(L)), "a curve saturated before its smallest depth (noise only)")


# ---------------------------------------------------------------- ex10_2 loops to saturate
@pytest.mark.ex10_2
def test_loops_to_saturate_brute_force(impl):
    rng = np.random.default_rng(0)
    for _ in range(200):
        A, tau, eps = rng.uniform(0.01, 2.0), rng.uniform(0.2, 10.0), 10 ** rng.uniform(-4, -0.5)
        want = next(T for T in range(1, 10_000) if A * math.exp(-T / tau) <= eps)
        got = impl(A, tau, eps)
        check(isinstance(got, (int, np.integer)), f"return an int, got {type(got).__name__}")
        assert_equal(int(got), want, f"loops for A={A:.4f}, tau={tau:.3f}, eps={eps:.2e}",
                     hint="the fewest whole loops T >= 1 with A exp(-T / tau) <= eps")


@pytest.mark.ex10_2
def test_loops_to_saturate_edges(impl):
    assert_equal(int(impl(0.001, 2.0, 0.01)), 1, "A below eps: one loop", hint="a model runs at least one loop")
    # an exact whole answer: A exp(-T / tau) = eps at T = 6 exactly in real numbers
    assert_equal(int(impl(math.e ** 3, 2.0, 1.0)), 6, "A = e^3, tau = 2, eps = 1: exactly 6 loops",
                 hint="tau ln(A / eps) = 6 may come out as 6.000000000000001 in floating point")
    for bad in ((0.0, 1.0, 0.1), (1.0, -1.0, 0.1), (1.0, 1.0, 0.0)):
        with pytest.raises(ValueError):
            impl(*bad)


# ---------------------------------------------------------------- ex10_3 the halting rule
def _log_probs(rng, shape, sharp):
    z = rng.normal(0, sharp, shape)
    return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)


@pytest.mark.ex10_3
def test_halts_kl(impl):
    rng = np.random.default_rng(0)
    prev = _log_probs(rng, (3, 7, 11), 2.0)
    now = prev + rng.normal(0, 0.05, prev.shape) * (rng.random((3, 7, 1)) < 0.5)  # half the positions move
    now = now - np.log(np.exp(now).sum(-1, keepdims=True))
    kl = (np.exp(prev) * (prev - now)).sum(-1)  # KL(p_prev || p_now): (3, 7)
    for threshold in (1e-6, np.median(kl), 1e-2, 1.0):
        got = impl("kl", float(threshold), ml.Tensor(now), ml.Tensor(prev))
        check(isinstance(got, np.ndarray) and got.dtype == bool, f"return a NumPy bool array, got {type(got).__name__}")
        assert_equal(got, kl < threshold, f"halting by KL < {threshold:.3g}",
                     hint="KL(p_prev || p_now) = sum_v p_prev(v) (log p_prev(v) - log p_now(v)), per position")


@pytest.mark.ex10_3
def test_halts_kl_direction_and_first_loop(impl):
    # two distributions whose KL differs by direction: only KL(p_prev || p_now) is right
    prev = np.log(np.array([[[0.98, 0.01, 0.01]]]))
    now = np.log(np.array([[[0.6, 0.2, 0.2]]]))
    forward = float((np.exp(prev) * (prev - now)).sum())
    backward = float((np.exp(now) * (now - prev)).sum())
    threshold = (forward + backward) / 2
    got = impl("kl", threshold, ml.Tensor(now), ml.Tensor(prev))
    assert_equal(got, np.array([[forward < threshold]]), "the direction of the KL",
                 hint=f"KL(p_prev || p_now) = {forward:.4f}, KL(p_now || p_prev) = {backward:.4f}")
    first = impl("kl", 1e9, ml.Tensor(now), None)
    assert_equal(first, np.zeros((1, 1), dtype=bool), "after the first loop (no previous prediction)",
                 hint="KL needs two loops: nothing halts after the first")


@pytest.mark.ex10_3
def test_halts_max_prob(impl):
    rng = np.random.default_rng(1)
    now = _log_probs(rng, (4, 5, 9), 3.0)
    top = np.exp(now).max(-1)
    for threshold in (0.2, float(np.median(top)), 0.9):
        got = impl("max_prob", threshold, ml.Tensor(now), None)
        assert_equal(got, top >= threshold, f"halting by max probability >= {threshold:.3g}")
    got = impl("max_prob", float(top[0, 0]), ml.Tensor(now), ml.Tensor(now))
    check(bool(got[0, 0]), "a position whose top probability equals the threshold halts (>=)")


# ---------------------------------------------------------------- ex10_4 equal-FLOPs loop count
SMALL = dict(block_size=64, vocab_size=65, n_embd=128, n_head=4, bias=True)
LOOPED = {
    "loop_residual 1x4": GPTConfig(**SMALL, variant="loop_residual", n_layer=1, n_loops=4),
    "loop_residual 2x3": GPTConfig(**SMALL, variant="loop_residual", n_layer=2, n_loops=3),
    "contractive 1x4": GPTConfig(**SMALL, variant="contractive", n_layer=1, n_loops=4),
    "fully_looped 1x4": GPTConfig(**SMALL, variant="fully_looped", n_layer=1, n_loops=4),
    "parcae 1+1+1": GPTConfig(**SMALL, variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=4,
                              backprop_loops=2),
}


def _named_numels(config):
    with torch.device("meta"):  # shapes only
        model = TorchGPT(config)
    return [(n, p.numel()) for n, p in model.named_parameters()]


@pytest.mark.ex10_4
def test_equal_flops_whole_loops(impl):
    gpt4 = GPTConfig(**SMALL, n_layer=4)
    target = forward_flops_per_token(gpt4, _named_numels(gpt4))
    for name in ("loop_residual 1x4", "contractive 1x4", "fully_looped 1x4"):
        c = LOOPED[name]
        assert_close(impl(c, _named_numels(c), target), 4.0, f"{name} at the FLOPs of 4 unique blocks", rtol=1e-9,
                     hint="one block looped 4 times applies as many weights as 4 unique blocks")


@pytest.mark.ex10_4
@pytest.mark.parametrize("name", list(LOOPED))
def test_equal_flops_any_budget(impl, name):
    c = LOOPED[name]
    named = _named_numels(c)
    for layers in (1, 2, 4, 8, 12):
        g = GPTConfig(**SMALL, n_layer=layers)
        target = forward_flops_per_token(g, _named_numels(g))
        n = impl(c, named, target)
        check(isinstance(n, (float, np.floating)), f"return a float, got {type(n).__name__}")
        # forward_flops_per_token takes n_loops as a multiplier: any real n is allowed
        assert_close(forward_flops_per_token(c, named, n), target,
                     f"{name}: forward FLOPs at your n = {n:.4f} against a {layers}-block gpt2's", rtol=1e-9,
                     hint="forward FLOPs per token are affine in the loop count: what applies once, plus n "
                          "times what one loop applies")


@pytest.mark.ex10_4
def test_equal_flops_refuses_gpt2(impl):
    g = GPTConfig(**SMALL, n_layer=4)
    with pytest.raises(ValueError):
        impl(g, _named_numels(g), 1e6)
