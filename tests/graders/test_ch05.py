"""Graders of chapter 5 (exercises/ch05_loop_residual.py): the Loop-Residual step, forward
FLOPs at n loops, a shared weight's gradient loop by loop, the per-loop logit lens.
Oracles, on tiny float64 core models: the loop unrolled by hand (blocks applied one by one),
FLOPs counted parameter by parameter and the paper's GPT2-45M configs, one backward of the
model's loss (the sum over loops) and central differences through one loop's copy of a
weight alone (each loop's share), the readout of every state written out by hand."""
import copy

import numpy as np
import pytest
import torch

import minilooped as ml
import minilooped.functional as F
from minilooped.grading.checks import assert_close, assert_equal, check
from minilooped.models import GPT, GPTConfig
from minilooped.torch.models import GPT as TorchGPT
from minilooped.training.mfu import flops_per_token

torch.set_num_threads(1)

SMALL = dict(block_size=8, vocab_size=13, n_embd=16, n_head=2, bias=True, variant="loop_residual")
CONFIGS = {
    "1 block x 3 loops": GPTConfig(**SMALL, n_layer=1, n_loops=3),
    "2 blocks x 2 loops": GPTConfig(**SMALL, n_layer=2, n_loops=2),
    "prelude 1 + 1 block x 3 loops + coda 1": GPTConfig(**SMALL, n_layer=3, n_loops=3, n_prelude=1, n_coda=1),
}


def _model(config, seed=0):
    ml.manual_seed(seed)
    model = GPT(config).to("float64")
    r = np.random.default_rng(seed + 100)  # larger weights than the init: loops that matter
    for name, p in model.named_parameters():
        if name.startswith("transformer.h.") and p.ndim == 2:
            p.data = r.standard_normal(p.shape) * 0.2
    return model


def _batch(config, seed=0, B=2):
    r = np.random.default_rng(seed)
    T = config.block_size
    return r.integers(0, config.vocab_size, (B, T)), r.integers(0, config.vocab_size, (B, T))


def _arr(t):
    return np.array(t.numpy() if isinstance(t, ml.Tensor) else t, dtype=np.float64)


def _states_by_hand(model, idx, n_loops=None):
    """[h_0, h_1, ..., h_n] with every block applied explicitly, as the paper's rule says."""
    c, tr = model.config, model.transformer
    n = c.n_loops if n_loops is None else n_loops
    with ml.no_grad():
        x = tr.wte(idx) + tr.wpe.weight[:idx.shape[1]]  # (B, T, C)
        for i in range(c.loop_start):
            x = tr.h[i](x)
        states = [x]
        for _ in range(n):
            for i in range(c.loop_start, c.loop_end):
                x = tr.h[i](x)  # x <- x + f(x), block by block
            states.append(x)
    return states


def _readout_by_hand(model, h):
    c, tr = model.config, model.transformer
    with ml.no_grad():
        for i in range(c.loop_end, c.n_layer):
            h = tr.h[i](h)
        return _arr(model.lm_head(tr.ln_f(h)))  # (B, T, V)


# ---------------------------------------------------------------- ex5_1 the step
def _with_trunk(model, impl):
    student = copy.deepcopy(model)
    student.transformer.trunk = impl(student.config)
    return student


@pytest.mark.ex5_1
def test_step_gives_the_unrolled_loop(impl):
    for name, config in CONFIGS.items():
        model = _model(config)
        student = _with_trunk(model, impl)
        idx, targets = _batch(config)
        for n in (1, config.n_loops, 5):
            with ml.no_grad():
                logits, _ = student(idx, n_loops=n)
            expected = _readout_by_hand(model, _states_by_hand(model, idx, n)[-1])
            assert_close(logits, expected, f"{name}, {n} loops: logits", rtol=1e-10, atol=1e-12,
                         hint="apply the looped group's blocks, in order, to h; each block already adds its "
                              "residual")


@pytest.mark.ex5_1
def test_step_records_the_state_and_trains(impl):
    config = CONFIGS["2 blocks x 2 loops"]
    model = _model(config, seed=1)
    student = _with_trunk(model, impl)
    idx, targets = _batch(config, seed=1)
    with student.trace_loops() as trace:
        with ml.no_grad():
            student(idx)
    expected = _states_by_hand(model, idx)[1:]
    assert_equal(len(trace), len(expected), "states recorded by self.record, one per loop",
                 hint="call self.record(h) once, on the state step returns")
    for t, (got, want) in enumerate(zip(trace, expected)):
        assert_close(got, want, f"recorded state after loop {t}", rtol=1e-10, atol=1e-12)
    _, loss = student(idx, targets)
    loss.backward()
    _, ref_loss = model(idx, targets)
    ref_loss.backward()
    for (name, p), q in zip(student.named_parameters(), model.parameters()):
        assert_close(p.grad, q.grad, f"gradient of {name}", rtol=1e-9, atol=1e-12,
                     hint="build the step from the blocks' own calls, so autograd sees every loop")


# ---------------------------------------------------------------- ex5_2 forward FLOPs
def _named_numels(config):
    with torch.device("meta"):  # shapes only
        model = TorchGPT(config)
    return [(n, p.numel()) for n, p in model.named_parameters()]


def _flops_by_hand(config, named, n):
    """Every parameter use and every attention application, counted one by one."""
    c = config
    uses = [1] * c.n_layer if c.variant == "gpt2" else \
        [n if c.loop_start <= i < c.loop_end else 1 for i in range(c.n_layer)]
    total = 0
    for name, numel in named:
        if name.startswith("transformer.wpe"):
            continue
        if name.startswith("transformer.h."):
            total += 2 * numel * uses[int(name.split(".")[2])]
        else:
            total += 2 * numel
    return total + sum(uses) * 4 * c.block_size * c.n_embd


@pytest.mark.ex5_2
def test_forward_flops_counted_by_hand(impl):
    configs = {**CONFIGS, "gpt2 x 3": GPTConfig(**{**SMALL, "variant": "gpt2"}, n_layer=3)}
    for name, config in configs.items():
        named = _named_numels(config)
        for n in ((None, 1, 2, 7) if config.variant != "gpt2" else (None,)):
            want = _flops_by_hand(config, named, config.n_loops if n is None else n)
            assert_close(float(impl(config, named, n)), want, f"{name}, n_loops={n}: forward FLOPs per token",
                         rtol=1e-12, hint="2 FLOPs per parameter use (the looped blocks' once per loop, the rest "
                                          "once; the position table is a lookup), 4 T C per block application")


@pytest.mark.ex5_2
def test_forward_flops_is_a_third_of_training(impl):
    for name, config in CONFIGS.items():
        named = _named_numels(config)
        assert_close(float(impl(config, named)), flops_per_token(config, named) / 3,
                     f"{name}: forward FLOPs against a third of the training FLOPs (6N + 12LHQT)", rtol=1e-12,
                     hint="the backward costs twice the forward")


@pytest.mark.ex5_2
def test_forward_flops_of_the_papers_45m_pair(impl):
    lite, looped = GPTConfig.from_preset("gpt2-45m-lite"), GPTConfig.from_preset("loop-residual-45m")
    named = _named_numels(looped)
    one, two = float(impl(lite, _named_numels(lite))), float(impl(looped, named))
    assert_close(float(impl(looped, named, 1)), one, "loop-residual-45m run at 1 loop against gpt2-45m-lite",
                 rtol=1e-12)
    check(1.18 < two / one < 1.19, f"loop-residual-45m costs {two / one:.4f}x gpt2-45m-lite's forward FLOPs; "
          "expected about 1.18 (the tied 50257 x 768 head, applied once, outweighs one block)",
          hint="the head is applied once, however many loops run; each block application also attends over "
               "the 1024-token context")


# ---------------------------------------------------------------- ex5_3 gradient by loop
def _loss_with_loop_copy(model, idx, targets, loop, name, delta):
    """The model's loss (eval mode) when loop ``loop`` alone uses parameter ``name`` + delta."""
    trunk = model.transformer.trunk
    step = type(trunk).step
    sub = name[len("transformer.h."):]

    def one_loop_changed(h, ctx, blocks, t):
        if t != loop:
            return step(trunk, h, ctx, blocks, t)
        mine = copy.deepcopy(blocks)
        p = dict(mine.named_parameters())[sub]
        p.data = p.data + delta
        return step(trunk, h, ctx, mine, t)

    trunk.step = one_loop_changed
    try:
        with ml.no_grad():
            _, loss = model(idx, targets)
    finally:
        del trunk.step
    return float(_arr(loss))


@pytest.mark.ex5_3
def test_shares_add_up_to_the_gradient(impl):
    for name, config in CONFIGS.items():
        model = _model(config, seed=2)
        model.eval()
        idx, targets = _batch(config, seed=2)
        shares = impl(model, idx, targets)
        check(isinstance(shares, dict), f"return a dict, got {type(shares).__name__}")
        _, loss = model(idx, targets)
        loss.backward()
        for pname, p in model.named_parameters():
            if not pname.startswith("transformer.h."):
                continue
            check(pname in shares, f"{name}: no entry for {pname}", hint="one entry per parameter of transformer.h")
            got = np.asarray(shares[pname], dtype=np.float64)
            assert_equal(tuple(got.shape), (config.n_loops, *p.shape), f"{name}: shape of {pname}'s shares")
            i = int(pname.split(".")[2])
            if config.loop_start <= i < config.loop_end:
                assert_close(got.sum(axis=0), p.grad, f"{name}: {pname}'s shares summed over the loops",
                             rtol=1e-9, atol=1e-12, hint="the shares of every use add up to the gradient")
            else:
                assert_close(got, np.zeros_like(got), f"{name}: {pname} (outside the loop) by loop", atol=1e-15,
                             hint="a prelude or coda block is not used by any loop")


@pytest.mark.ex5_3
def test_each_share_is_that_loops_use_alone(impl):
    config = CONFIGS["1 block x 3 loops"]
    model = _model(config, seed=3)
    idx, targets = _batch(config, seed=3)
    shares = impl(model, idx, targets)
    r = np.random.default_rng(3)
    eps = 1e-6
    for pname in ("transformer.h.0.mlp.c_fc.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.0.ln_2.bias"):
        p = dict(model.named_parameters())[pname]
        d = r.standard_normal(p.shape)
        for t in range(config.n_loops):
            fd = (_loss_with_loop_copy(model, idx, targets, t, pname, eps * d)
                  - _loss_with_loop_copy(model, idx, targets, t, pname, -eps * d)) / (2 * eps)
            got = float(np.sum(np.asarray(shares[pname])[t] * d))
            assert_close(got, fd, f"loop {t}'s share of {pname}, along a random direction, against central "
                         f"differences through loop {t}'s use alone", rtol=1e-5, atol=1e-9,
                         hint="loop t's share is the gradient of a copy of the weight that only loop t uses")
    shares_differ = np.abs(np.asarray(shares["transformer.h.0.mlp.c_fc.weight"])[0]
                           - np.asarray(shares["transformer.h.0.mlp.c_fc.weight"])[-1]).max()
    check(shares_differ > 1e-6, "the first and last loops' shares are equal: they should not be",
          hint="each loop sees a different input h_t")


@pytest.mark.ex5_3
def test_grad_by_loop_leaves_the_model_as_it_was(impl):
    config = CONFIGS["2 blocks x 2 loops"]
    model = _model(config, seed=4)
    model.train()
    idx, targets = _batch(config, seed=4)
    impl(model, idx, targets, n_loops=3)
    check(model.training, "the model was left in eval mode", hint="put back the mode you found")
    check(all(p.grad is None for p in model.parameters()), "the model's parameters have .grad set afterwards",
          hint="measure on copies, or put the gradients back")
    shares = impl(model, idx, targets, n_loops=3)
    assert_equal(np.asarray(shares["transformer.h.1.mlp.c_proj.weight"]).shape[0], 3,
                 "loops in the result with n_loops=3")


# ---------------------------------------------------------------- ex5_4 logit lens
def _lens_by_hand(model, idx, targets, n_loops=None):
    states = _states_by_hand(model, idx, n_loops)[1:]
    logp = []
    for h in states:
        z = _readout_by_hand(model, h)
        z = z - z.max(axis=-1, keepdims=True)
        logp.append(z - np.log(np.exp(z).sum(axis=-1, keepdims=True)))
    keep = targets != -1
    loss = np.array([-np.mean(lp[keep, targets[keep]]) for lp in logp])
    kl = np.array([np.mean(np.sum(np.exp(lp) * (lp - logp[-1]), axis=-1)) for lp in logp])
    return loss, kl


@pytest.mark.ex5_4
def test_lens_against_the_readout_by_hand(impl):
    for name, config in CONFIGS.items():
        model = _model(config, seed=5)
        idx, targets = _batch(config, seed=5)
        for n in (None, 4):
            got = impl(model, idx, targets, n_loops=n)
            check(isinstance(got, dict) and "loss" in got and "kl" in got, "return {'loss': ..., 'kl': ...}")
            loss, kl = _lens_by_hand(model, idx, targets, n)
            assert_close(got["loss"], loss, f"{name}, n_loops={n}: lens loss by loop", rtol=1e-9,
                         hint="read out h_t as the model reads out its last state: the coda, ln_f, lm_head")
            assert_close(got["kl"], kl, f"{name}, n_loops={n}: KL(p_t || p_final) by loop", rtol=1e-7, atol=1e-12,
                         hint="sum_v p_t(v) (log p_t(v) - log p_final(v)), averaged over positions")


@pytest.mark.ex5_4
def test_lens_last_loop_is_the_model_and_skips_missing_targets(impl):
    config = CONFIGS["prelude 1 + 1 block x 3 loops + coda 1"]
    model = _model(config, seed=6)
    model.train()
    idx, targets = _batch(config, seed=6)
    targets[0, :3] = -1  # no target at these positions
    got = impl(model, idx, targets)
    check(model.training, "the model was left in eval mode", hint="put back the mode you found")
    model.eval()
    with ml.no_grad():
        _, loss = model(idx, targets)
    assert_close(got["loss"][-1], float(_arr(loss)), "the last loop's lens loss against the model's own loss",
                 rtol=1e-9, hint="skip positions whose target is -1, as the model's cross-entropy does")
    assert_close(got["kl"][-1], 0.0, "KL of the last loop from itself", atol=1e-12)
    loss_by_hand, _ = _lens_by_hand(model, idx, targets)
    assert_close(got["loss"], loss_by_hand, "lens loss with some targets -1", rtol=1e-9)
