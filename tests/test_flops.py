"""FLOPs per token (training/mfu.py) against a brute-force count of a real forward pass.

The brute force runs a tiny model of the core with its functions instrumented: every
``F.linear`` adds 2 FLOPs per weight and bias element per token (a multiply-add per
weight), every attention 2 * 2 * S * E per query and head (q k^T over all S keys, then
the weights times v), every LayerNorm 2 per gain and bias element, and Parcae's injection
2 per element of ``a`` and ``dt_bias`` (PaLM's N counts every parameter at 2 FLOPs per
use). What runs with gradient recording on, in train mode, counts 3x (the backward is
2x the forward); what runs under no_grad counts 1x. The formula must match exactly.
"""
import math

import numpy as np
import pytest

import minilooped as ml
import minilooped.functional as F
from minilooped.models import GPT, GPTConfig
from minilooped.models import parcae as parcae_module
from minilooped.training.mfu import (flops_per_token, forward_flops_per_token, parcae_loop_counts,
                                     training_flops_per_token)

TINY = dict(block_size=8, vocab_size=11, n_embd=8, n_head=2, dropout=0.0)


class Counter:
    def __init__(self):
        self.forward, self.training = 0.0, 0.0

    def add(self, flops, train_mode):
        self.forward += flops
        self.training += flops * (3 if train_mode and ml.is_grad_enabled() else 1)


def _count(model, monkeypatch, idx, targets=None, **kwargs) -> Counter:
    """FLOPs of one call model(idx, targets, **kwargs), instrumented; totals over all tokens."""
    counter = Counter()
    train_mode = model.training
    linear, sdpa, layer_norm = F.linear, F.scaled_dot_product_attention, F.layer_norm
    injection = parcae_module.DiagonalInjection.forward

    def tokens(x):
        return x.numel() // x.shape[-1]

    def counted_linear(x, w, b=None):
        counter.add(2 * (w.numel() + (0 if b is None else b.numel())) * tokens(x), train_mode)
        return linear(x, w, b)

    def counted_sdpa(q, k, v, **kw):
        *batch, L, E = q.shape
        S, Ev = k.shape[-2], v.shape[-1]
        counter.add(2 * math.prod(batch) * L * S * (E + Ev), train_mode)
        return sdpa(q, k, v, **kw)

    def counted_layer_norm(x, shape, w=None, b=None, eps=1e-5):
        counter.add(2 * sum(0 if p is None else p.numel() for p in (w, b)) * tokens(x), train_mode)
        return layer_norm(x, shape, w, b, eps)

    def counted_injection(self, h, e):
        counter.add(2 * (self.a.numel() + self.dt_bias.numel()) * tokens(h), train_mode)
        return injection(self, h, e)

    monkeypatch.setattr(F, "linear", counted_linear)
    monkeypatch.setattr(F, "scaled_dot_product_attention", counted_sdpa)
    monkeypatch.setattr(F, "layer_norm", counted_layer_norm)
    monkeypatch.setattr(parcae_module.DiagonalInjection, "forward", counted_injection)
    try:
        model(idx, targets, **kwargs)
    finally:
        monkeypatch.undo()
    return counter


def _tiny(variant, **overrides):
    ml.manual_seed(0)
    config = GPTConfig(**TINY, variant=variant, **overrides)
    model = GPT(config)
    return config, model, [(n, p.numel()) for n, p in model.named_parameters()]


def _batch(config):
    rng = np.random.default_rng(0)
    T = config.block_size  # the count takes the whole context, as evaluation batches have
    idx = ml.Tensor(rng.integers(0, config.vocab_size, size=(1, T)))
    return idx, ml.Tensor(rng.integers(0, config.vocab_size, size=(1, T))), T


def _training(model, monkeypatch, config, **kwargs):
    idx, targets, T = _batch(config)
    model.train()
    return _count(model, monkeypatch, idx, targets, **kwargs).training / T


def _inference(model, monkeypatch, config, **kwargs):
    idx, _, T = _batch(config)
    model.eval()
    with ml.no_grad():
        return _count(model, monkeypatch, idx, **kwargs).forward / T


CASES = {
    "gpt2": ("gpt2", dict(n_layer=2)),
    "loop_residual": ("loop_residual", dict(n_layer=3, n_prelude=1, n_coda=1, n_loops=3)),
    "fully_looped all readouts": ("fully_looped", dict(n_layer=2, n_loops=3, injection="none", loss_loops="all")),
    "recursive lora": ("recursive", dict(n_layer=2, n_loops=3, lora_rank=2, relax_vectors=False)),
}


@pytest.mark.parametrize("case", CASES)
def test_training_flops_match_brute_force(case, monkeypatch):
    variant, overrides = CASES[case]
    config, model, numels = _tiny(variant, **overrides)
    assert flops_per_token(config, numels) == pytest.approx(_training(model, monkeypatch, config), rel=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_inference_flops_match_brute_force_at_every_depth(case, monkeypatch):
    variant, overrides = CASES[case]
    config, model, numels = _tiny(variant, **overrides)
    depths = [1] if variant == "gpt2" else [1, 2, 3] if variant == "recursive" else [1, 2, 5]
    for n in depths:
        kwargs = {} if variant == "gpt2" else {"n_loops": n}
        brute = _inference(model, monkeypatch, config, **kwargs)
        assert forward_flops_per_token(config, numels, n_loops=n) == pytest.approx(brute, rel=1e-12), n


PARCAE = dict(n_layer=3, n_prelude=1, n_coda=1, n_loops=3, backprop_loops=2)


@pytest.mark.parametrize("injection", ["diagonal", "linear", "add"])
@pytest.mark.parametrize("loops", [1, 2, 5])
def test_parcae_training_counts_no_grad_loops_as_forward_only(loops, injection, monkeypatch):
    """T = 5 with backprop_loops = 2: 3 loops under no_grad (1x), 2 with gradient (3x)."""
    config, model, numels = _tiny("parcae", **PARCAE, parcae_injection=injection)
    brute = _training(model, monkeypatch, config, n_loops=loops)
    assert training_flops_per_token(config, numels, n_loops=loops) == pytest.approx(brute, rel=1e-12)
    assert forward_flops_per_token(config, numels, n_loops=loops) == pytest.approx(
        _inference(model, monkeypatch, config, n_loops=loops), rel=1e-12)
    if loops > config.backprop_loops:  # the old count, 3x forward, is more
        assert 3 * forward_flops_per_token(config, numels, n_loops=loops) > brute


def test_parcae_expected_training_flops_is_the_mean_over_the_poisson():
    """Without a loop count, the expectation of the step's FLOPs over T ~ max(1, Poisson(n_loops)),
    summed here term by term over the distribution."""
    config, _, numels = _tiny("parcae", **PARCAE)
    lam = config.n_loops
    pmf = [math.exp(-lam) * lam ** t / math.factorial(t) for t in range(80)]
    mean = sum(p * training_flops_per_token(config, numels, n_loops=max(1, t)) for t, p in enumerate(pmf))
    assert flops_per_token(config, numels) == pytest.approx(mean, rel=1e-12)
    no_grad, grad = parcae_loop_counts(lam, config.backprop_loops)
    assert no_grad + grad == pytest.approx(lam + math.exp(-lam), rel=1e-12)  # E[max(1, P)]
    assert grad == pytest.approx(sum(p * min(max(1, t), 2) for t, p in enumerate(pmf)), rel=1e-12)


def test_parcae_per_sequence_counts_are_each_sequences_own_loops(monkeypatch):
    """One loop count per sequence: the mean over the sequences of each one's FLOPs, as if
    it ran alone (the model's FLOPs; the masked batch computes more)."""
    config, model, numels = _tiny("parcae", **PARCAE)
    counts = np.array([1, 5, 2, 3])
    alone = [_training(model, monkeypatch, config, n_loops=int(t)) for t in counts]
    assert training_flops_per_token(config, numels, counts) == pytest.approx(np.mean(alone), rel=1e-12)


def test_parcae_loop_counts_of_a_given_step():
    assert parcae_loop_counts(4, 2, loops=7) == (5.0, 2.0)
    assert parcae_loop_counts(4, 2, loops=1) == (0.0, 1.0)
