"""Optimisers, gradient clipping and the LR schedule against torch.optim, step by step."""
import copy
import math
import pickle

import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.optim import SGD, AdamW, clip_grad_norm_, set_lr, warmup_cosine

STEPS = 20
RTOL = 1e-10   # float64 trajectories: the same updates, rounding differences only
SHAPES = [(3, 4), (5,), ()]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _grad(p, t, i):
    """A gradient that depends on the parameter (so trajectories that drift apart show it)
    and on the step (so it is not a fixed point)."""
    rng = np.random.default_rng(100 * t + i)
    return np.asarray(np.tanh(p) * 0.5 + p * 0.1 + rng.standard_normal(p.shape) * 0.3)


def _groups(params, group_kwargs, lib):
    if group_kwargs is None:
        return params
    # two groups: the first parameter alone, with its own hyper-parameters
    return [dict(params=[params[0]], **group_kwargs), dict(params=params[1:])]


def _run(make_core, make_torch, group_kwargs=None, steps=STEPS, lr_schedule=None, skip_grad=None):
    init = _params()
    cps = [ml.Tensor(a.copy(), requires_grad=True) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    copt = make_core(_groups(cps, group_kwargs, "core"))
    topt = make_torch(_groups(tps, group_kwargs, "torch"))
    for t in range(steps):
        if lr_schedule is not None:
            set_lr(copt, lr_schedule(t))
            set_lr(topt, lr_schedule(t))
        for i, (cp, tp) in enumerate(zip(cps, tps)):
            if skip_grad is not None and skip_grad(t, i):
                cp.grad, tp.grad = None, None   # a parameter without gradient this step is left alone
                continue
            cp.grad = _grad(cp.data, t, i)
            tp.grad = torch.from_numpy(_grad(tp.detach().numpy(), t, i))
        copt.step()
        topt.step()
        for i, (cp, tp) in enumerate(zip(cps, tps)):
            np.testing.assert_allclose(cp.data, tp.detach().numpy(), rtol=RTOL, atol=1e-14,
                                       err_msg=f"parameter {i} after step {t + 1}")
    return cps, copt


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, dampening=0.3),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True),
    dict(lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.1, maximize=True),
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_trajectory_equals_torch(kw):
    _run(lambda ps: SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw))


def test_sgd_param_groups_equal_torch():
    kw = dict(lr=0.1, momentum=0.9)
    group = dict(lr=0.02, momentum=0.5, weight_decay=0.1, nesterov=True)
    _run(lambda ps: SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw), group_kwargs=group)


ADAMW_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, weight_decay=0.0),
    dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    dict(lr=1e-2, amsgrad=True),
    dict(lr=1e-2, maximize=True, weight_decay=0.05),
]


@pytest.mark.parametrize("kw", ADAMW_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_adamw_trajectory_equals_torch(kw):
    _run(lambda ps: AdamW(ps, **kw), lambda ps: torch.optim.AdamW(ps, **kw))


def test_adamw_param_groups_and_changing_lr_equal_torch():
    """Two groups (one without weight decay, as GPT-2 training does for biases and norms) and
    an lr that changes every step through set_lr, as the training loop's schedule does."""
    kw = dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    group = dict(weight_decay=0.0)
    _run(lambda ps: AdamW(ps, **kw), lambda ps: torch.optim.AdamW(ps, **kw), group_kwargs=group,
         lr_schedule=lambda t: warmup_cosine(t, 1e-2, 1e-3, 5, STEPS))


def test_parameters_without_gradient_are_skipped_like_torch():
    skip = lambda t, i: (t + i) % 3 == 0  # noqa: E731
    _run(lambda ps: AdamW(ps, lr=1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2), skip_grad=skip)
    _run(lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
         skip_grad=skip)


def test_float32_parameters_stay_float32():
    p = ml.Tensor(np.ones(3, np.float32), requires_grad=True)
    for opt in (AdamW([p], lr=0.1), SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)):
        for _ in range(2):
            p.grad = np.full(3, 0.5, np.float32)
            opt.step()
        assert p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values() if hasattr(v, "dtype"))


def test_zero_grad():
    p = ml.Tensor(np.ones(3), requires_grad=True)
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(3)
    opt.zero_grad(set_to_none=False)
    assert np.all(p.grad == 0)
    opt.zero_grad()
    assert p.grad is None


# ------------------------------------------------------------ state dicts
@pytest.mark.parametrize("make", [
    lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: AdamW(ps, lr=1e-2, amsgrad=True),
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
], ids=["adamw", "adamw-amsgrad", "sgd-nesterov"])
def test_state_dict_round_trip_continues_identically(make):
    """Save after 10 steps, load into a fresh optimiser over copied parameters: the next 10
    steps equal those of the optimiser that never stopped."""
    params = [ml.Tensor(a, requires_grad=True) for a in _params()]
    opt = make(params)

    def steps(ps, o, ts):
        for t in ts:
            for i, p in enumerate(ps):
                p.grad = _grad(p.data, t, i)
            o.step()

    steps(params, opt, range(10))
    saved = pickle.loads(pickle.dumps(opt.state_dict()))      # as a checkpoint file would
    clones = [ml.Tensor(p.data.copy(), requires_grad=True) for p in params]
    resumed = make(clones)
    resumed.load_state_dict(saved)
    steps(params, opt, range(10, 20))
    steps(clones, resumed, range(10, 20))
    for p, c in zip(params, clones):
        np.testing.assert_array_equal(p.data, c.data)


def test_state_dict_is_a_snapshot_and_restores_hyperparameters():
    p = ml.Tensor(np.ones(3), requires_grad=True)
    opt = AdamW([p], lr=1e-2)
    p.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0] and sd["state"][0]["step"] == 1
    p.grad = np.ones(3)
    opt.step()
    assert sd["state"][0]["step"] == 1              # not aliased to the live state
    set_lr(opt, 5.0)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 1e-2 and opt.param_groups[0]["params"] == [p]
    assert opt.state[id(p)]["step"] == 1


# ------------------------------------------------------------------ clipping
@pytest.mark.parametrize("max_norm", [0.5, 1.0, 100.0])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_equals_torch(max_norm, norm_type):
    grads = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(SHAPES)]
    cps = [ml.Tensor(np.zeros(s), requires_grad=True) for s in SHAPES]
    tps = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for cp, tp, g in zip(cps, tps, grads):
        cp.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    total = clip_grad_norm_(cps, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for cp, tp in zip(cps, tps):
        np.testing.assert_allclose(cp.grad, tp.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_edge_cases():
    p = ml.Tensor(np.zeros(3), requires_grad=True)
    assert clip_grad_norm_([p], 1.0) == 0.0            # no gradients at all
    p.grad = np.array([3.0, 4.0, 0.0])
    assert clip_grad_norm_(p, 1.0) == pytest.approx(5.0)   # a single tensor is accepted
    np.testing.assert_allclose(np.linalg.norm(p.grad), 1.0, rtol=1e-6)
    p.grad = np.array([np.inf, 0.0, 0.0])
    with pytest.raises(RuntimeError, match="the total gradient norm is inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


# ------------------------------------------------------------------ schedule
def test_warmup_cosine_shape():
    max_lr, min_lr, warmup, total = 6e-4, 6e-5, 10, 100
    lrs = [warmup_cosine(s, max_lr, min_lr, warmup, total) for s in range(130)]
    warm, decay, tail = lrs[:warmup], lrs[warmup:total + 1], lrs[total:]
    assert all(0 < a < b for a, b in zip(warm, warm[1:]))        # rises linearly ...
    np.testing.assert_allclose(np.diff(warm), max_lr / (warmup + 1), rtol=1e-12)
    assert warm[-1] < max_lr and lrs[warmup] == max_lr            # ... to the peak at warmup_steps
    assert all(a >= b for a, b in zip(decay, decay[1:]))          # then falls ...
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx((max_lr + min_lr) / 2)       # half way down at half way
    assert all(lr == min_lr for lr in tail)                      # ... to min_lr, and stays
    # a cosine: the decay is slow at both ends and fastest in the middle
    steps = -np.diff(decay)
    assert steps[0] < steps[len(steps) // 2] > steps[-1]


def test_warmup_cosine_without_warmup_and_bad_arguments():
    assert warmup_cosine(0, 1.0, 0.1, 0, 10) == 1.0
    assert warmup_cosine(10, 1.0, 0.1, 0, 10) == 0.1
    with pytest.raises(ValueError, match="warmup_steps and max_steps must be >= 0"):
        warmup_cosine(0, 1.0, 0.1, -1, 10)


def test_set_lr_writes_every_group():
    a, b = (ml.Tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = AdamW([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    assert copy.deepcopy(opt.param_groups[1]["betas"]) == (0.9, 0.999)


def test_loaded_state_is_a_copy_even_for_scalar_parameters():
    """load_state_dict copies every array, 0-d moments included: stepping the loaded optimiser
    must not write into the state dict (or into another optimiser loaded from it)."""
    for make in (lambda ps: AdamW(ps, lr=0.1), lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)):
        p = ml.Tensor(np.array(1.0), requires_grad=True)          # a scalar parameter (a gate, say)
        opt = make([p])
        p.grad = np.array(0.5)
        opt.step()
        sd = opt.state_dict()
        before = copy.deepcopy(sd["state"])
        q = ml.Tensor(np.array(1.0), requires_grad=True)
        other = make([q])
        other.load_state_dict(sd)
        q.grad = np.array(0.5)
        other.step()
        for name, v in sd["state"][0].items():
            np.testing.assert_array_equal(v, before[0][name], err_msg=name)
