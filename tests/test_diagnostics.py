"""The looped-model lab (minilooped/models/diagnostics.py and its mirror), against brute
force on tiny float64 models: states stepped by hand, readouts written out by hand, an
unrolled backward with retain_grad and central differences, the full Jacobian by reverse
mode and numpy.linalg.svd. Tests marked BOTH run on the NumPy core and on the PyTorch
mirror (the two adapters below); the parity tests copy the mirror's weights into the core.

Tolerances, stated:
- by-hand checks in float64: rtol 1e-12 (the same ops in the same order), 1e-9 for
  gradients and lens values that go through a different summation.
- spectral norm vs the SVD of the full Jacobian: the estimate is a lower bound and within
  rtol 1e-7 of sigma_max (300 iterations on a model with a spectral gap; the core's finite
  difference J v adds ~1e-10).
- core vs mirror parity of loop_table: float64 rtol 1e-9 (jac_sigma 1e-7: the core's J v
  is a finite difference) plus atol 1e-12 times each array's largest magnitude; float32
  rtol 1e-3, atol 1e-4 times the largest magnitude. rel_update and lens_kl are
  differences of nearly equal numbers (near 0 when the loop has converged): absolute
  tolerances, rel_update 1e-10 / 1e-3 and lens_kl 1e-12 / 1e-5 (float64 / float32).
"""
import types

import numpy as np
import pytest


def _core_adapter():
    import minilooped as ml
    import minilooped.functional as F
    from minilooped import backend
    from minilooped.models import GPT, GPTConfig, from_gpt2
    from minilooped.models import diagnostics as D

    def to(model, dtype):
        return model.to(dtype)

    def tensor(a, dtype="float64"):
        return ml.Tensor(np.asarray(a, dtype=dtype))

    def tokens(a):
        return np.asarray(a)

    def arr(t):
        return np.array(t.numpy() if isinstance(t, ml.Tensor) else t, dtype=np.float64)

    def grad_arr(g):
        return None if g is None else np.array(g, dtype=np.float64)

    def full_jacobian(f, h):
        """(N, N) by the core's reverse mode, one row (one backward) per output entry."""
        n = h.numel()
        rows = []
        for i in range(n):
            leaf = ml.Tensor(h.data.copy(), requires_grad=True)
            e = np.zeros(n)
            e[i] = 1.0
            f(leaf).backward(e.reshape(h.shape))
            rows.append(leaf.grad.reshape(-1).copy())
        return np.array(rows)

    def rng_state():
        return backend.generator("cpu").bit_generator.state

    def set_rng_state(s):
        backend.generator("cpu").bit_generator.state = s

    def set_param(p, a):
        p.data = np.asarray(a, dtype=p.dtype)

    no_grad = ml.no_grad
    seed = ml.manual_seed
    return types.SimpleNamespace(**{k: v for k, v in locals().items() if not k.startswith("_")})


def _torch_adapter():
    import torch
    import torch.nn.functional as F

    from minilooped.torch.models import GPT, GPTConfig, from_gpt2
    from minilooped.torch.models import diagnostics as D

    torch.set_num_threads(1)  # tiny models: one thread beats an oversubscribed pool

    def to(model, dtype):
        return model.to(getattr(torch, dtype))

    def tensor(a, dtype="float64"):
        return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype))

    def tokens(a):
        return torch.as_tensor(np.asarray(a))

    def arr(t):
        return t.detach().double().numpy() if torch.is_tensor(t) else np.asarray(t, dtype=np.float64)

    def grad_arr(g):
        return None if g is None else g.double().numpy().copy()

    def full_jacobian(f, h):
        n = h.numel()
        return torch.autograd.functional.jacobian(f, h).reshape(n, n).numpy()

    def rng_state():
        return torch.get_rng_state()

    def set_rng_state(s):
        torch.set_rng_state(s)

    def set_param(p, a):
        with torch.no_grad():
            p.copy_(torch.tensor(a))

    no_grad = torch.no_grad
    seed = torch.manual_seed
    return types.SimpleNamespace(**{k: v for k, v in locals().items() if not k.startswith("_")})


CORE, TORCH = _core_adapter(), _torch_adapter()
BOTH = pytest.mark.parametrize("impl", [CORE, TORCH], ids=["core", "torch"])

TINY = dict(vocab_size=64, n_embd=16, n_head=2, block_size=8, n_layer=3)
VARIANTS = {
    "gpt2": dict(),
    "loop_residual": dict(variant="loop_residual", n_prelude=1, n_coda=1, n_loops=3),
    "loop_residual_2": dict(variant="loop_residual", n_coda=1, n_loops=3),  # 2 blocks per loop
    "fully_looped": dict(variant="fully_looped", n_layer=2, n_loops=3),
    "fully_looped_LTi": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="additive"),
    "contractive": dict(variant="contractive", n_layer=2, n_prelude=1, n_loops=3),
    "parcae": dict(variant="parcae", n_prelude=1, n_coda=1, n_loops=3),
}


def make(impl, name, scale=1.0, dtype="float64"):
    """A tiny model, the same weights in both implementations (the mirror's init copied
    into the core); scale multiplies the blocks' weight matrices (a wider spectral gap)."""
    mirror, core = build_pair(name, dtype)
    model = core if impl is CORE else mirror
    if scale != 1.0:
        for n, p in model.named_parameters():
            if n.startswith("transformer.h.") and len(p.shape) == 2:
                impl.set_param(p, scale * impl.arr(p))
    model.eval()
    return model


def build_pair(name, dtype):
    """(mirror, core) with the same weights, as tests/test_parity.py."""
    TORCH.seed(0)
    if name == "recursive":
        source = TORCH.to(TORCH.GPT(TORCH.GPTConfig(**{**TINY, "n_layer": 4})), dtype)
        mirror = TORCH.from_gpt2(source, 2, sharing="cycle", init="average", lora_rank=4)
    else:
        mirror = TORCH.to(TORCH.GPT(TORCH.GPTConfig(**{**TINY, **VARIANTS[name]})), dtype)
    core = CORE.to(CORE.GPT(mirror.config), dtype)
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    return mirror, core


def batch(B=2, T=8, seed=0):
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, 64, (B, T)), rng.integers(0, 64, (B, T))
    targets[0, :2] = -1  # ignored positions, as the model's loss skips them
    return idx, targets


def h0_for(impl, model, B=2, T=8, seed=5):
    """An explicit Parcae h_0 (None for the others), the same in both implementations."""
    if model.config.variant != "parcae":
        return None
    return impl.tensor(0.3 * np.random.default_rng(seed).standard_normal((B, T, model.config.n_embd)))


def by_hand(impl, model, idx, h0=None):
    """h_0 .. h_n and each loop's block outputs, stepped by hand through the trunk's methods."""
    tr = model.transformer
    trunk = tr.trunk
    x = tr.drop(tr.wte(impl.tokens(idx)) + tr.wpe.weight[:idx.shape[1]])
    h, ctx = trunk.enter(x, tr.h) if h0 is None else trunk.enter(x, tr.h, h0=h0)
    states = [h]
    n = model.config.n_layer if model.config.variant == "gpt2" else model.config.n_loops
    for t in range(n):
        states.append(trunk.step(states[-1], ctx, tr.h, t))
    return states, ctx


# ------------------------------------------------------------------ hidden norms
@BOTH
@pytest.mark.parametrize("name", list(VARIANTS))
def test_hidden_norms_against_states_by_hand(impl, name):
    model = make(impl, name)
    idx, _ = batch()
    h0 = h0_for(impl, model)
    got = impl.D.hidden_norms(model, idx, h0=h0)
    with impl.no_grad():
        states, _ = by_hand(impl, model, idx, h0)
    hs = [None if h is None else impl.arr(h) for h in states]
    rms = [np.sqrt(np.mean(h ** 2)) for h in hs[1:]]
    rel = [np.nan if a is None else np.linalg.norm(b - a) / np.linalg.norm(b) for a, b in zip(hs, hs[1:])]
    np.testing.assert_allclose(got["rms"], rms, rtol=1e-12)
    np.testing.assert_allclose(got["rel_update"], rel, rtol=1e-12, atol=1e-15)  # NaN where h_0 is None
    assert np.isnan(got["rel_update"][0]) == name.startswith("fully_looped")
    n_per_loop = {"gpt2": 1, "loop_residual_2": 2, "fully_looped": 2, "fully_looped_LTi": 2}.get(name, 1)
    assert got["rms_layer"].shape == (len(rms), n_per_loop)


@BOTH
def test_hidden_norms_per_layer_by_hand(impl):
    """loop_residual_2: the loop is blocks 0 and 1; x_{t,l} is block l's output in loop t."""
    model = make(impl, "loop_residual_2")
    idx, _ = batch()
    got = impl.D.hidden_norms(model, idx)["rms_layer"]
    tr = model.transformer
    with impl.no_grad():
        h = tr.drop(tr.wte(impl.tokens(idx)) + tr.wpe.weight[:8])
        want = []
        for t in range(3):
            row = []
            for i in (0, 1):
                h = tr.h[i](h)
                row.append(np.sqrt(np.mean(impl.arr(h) ** 2)))
            want.append(row)
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ------------------------------------------------------------------ logit lens
def explicit_readout(impl, model, name, h):
    """The variant's readout written out (not trunk.readout): what ln_f sees after a loop."""
    tr = model.transformer
    if name == "loop_residual":
        return tr.h[2](h)  # the coda
    if name == "parcae":
        return tr.h[2](tr.trunk.C(h))  # coda(C h)
    return h  # fully looped: its normalised state itself


def cross_entropy(logits, targets):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    keep = targets != -1
    return -np.mean(logp[keep, targets[keep]]), logp


@BOTH
@pytest.mark.parametrize("name", ["loop_residual", "parcae", "fully_looped"])
def test_logit_lens_against_explicit_readout(impl, name):
    model = make(impl, name)
    idx, targets = batch()
    h0 = h0_for(impl, model)
    got = impl.D.logit_lens(model, idx, targets, h0=h0)
    tr = model.transformer
    with impl.no_grad():
        states, _ = by_hand(impl, model, idx, h0)
        logits = [impl.arr(model.lm_head(tr.ln_f(explicit_readout(impl, model, name, h)))) for h in states[1:]]
    losses, logps = zip(*[cross_entropy(z, targets) for z in logits])
    kl = [np.mean(np.sum(np.exp(lp) * (lp - logps[-1]), -1)) for lp in logps]
    np.testing.assert_allclose(got["loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(got["kl"], kl, rtol=1e-9, atol=1e-15)
    assert got["kl"][-1] == 0.0


@BOTH
@pytest.mark.parametrize("name", list(VARIANTS))
def test_logit_lens_last_loop_is_the_model(impl, name):
    model = make(impl, name)
    idx, targets = batch()
    h0 = h0_for(impl, model)
    got = impl.D.logit_lens(model, idx, targets, h0=h0)
    kw = {} if h0 is None else {"h0": h0}
    with impl.no_grad():
        logits, loss = model(impl.tokens(idx), impl.tokens(targets), **kw)
    np.testing.assert_allclose(got["loss"][-1], float(impl.arr(loss)), rtol=1e-12)
    np.testing.assert_allclose(got["loss"][-1], cross_entropy(impl.arr(logits), targets)[0], rtol=1e-12)


# ------------------------------------------------------------------ gradient norms
def unrolled_loss(impl, model, idx, targets, start=None, t0=0):
    """loop_residual_2 written out: blocks 0, 1 looped 3 times, coda block 2. From state
    ``start`` entering loop t0 if given. Returns (loss, [x_{t,l}], [h_{t+1}])."""
    tr = model.transformer
    h = tr.drop(tr.wte(impl.tokens(idx)) + tr.wpe.weight[:8]) if start is None else start
    outs, states = [], []
    for t in range(t0, 3):
        for i in (0, 1):
            h = tr.h[i](h)
            outs.append(h)
        states.append(h)
    logits = model.lm_head(tr.ln_f(tr.h[2](h)))  # (B, T, vocab)
    loss = impl.F.cross_entropy(logits.reshape(16, -1), impl.tokens(targets).reshape(16), ignore_index=-1)
    return loss, outs, states


@BOTH
def test_grad_norms_against_unrolled_backward(impl):
    model = make(impl, "loop_residual_2")
    idx, targets = batch()
    got = impl.D.grad_norms(model, idx, targets)
    loss, outs, states = unrolled_loss(impl, model, idx, targets)
    for x in outs:
        x.retain_grad()
    loss.backward()
    want_layer = np.array([np.linalg.norm(impl.grad_arr(x.grad)) for x in outs]).reshape(3, 2)
    np.testing.assert_allclose(got["layer"], want_layer, rtol=1e-9)
    np.testing.assert_allclose(got["state"], want_layer[:, 1], rtol=1e-9)  # h_{t+1} = x_{t,1}
    blocks = [np.sqrt(sum(np.sum(impl.grad_arr(p.grad) ** 2) for p in b.parameters())) for b in model.transformer.h]
    np.testing.assert_allclose(got["block"], blocks, rtol=1e-9)
    total = np.sqrt(sum(np.sum(impl.grad_arr(p.grad) ** 2) for p in model.parameters()))
    np.testing.assert_allclose(got["total"], total, rtol=1e-9)

    # the retained gradient is dL/dh_t: check it by central differences along a direction
    g = impl.grad_arr(states[0].grad)  # dL/dh_1, the state entering loop 1
    d = np.random.default_rng(1).standard_normal(g.shape)
    h1 = impl.arr(states[0])
    eps = 1e-6
    with impl.no_grad():
        up = float(impl.arr(unrolled_loss(impl, model, idx, targets, impl.tensor(h1 + eps * d), 1)[0]))
        down = float(impl.arr(unrolled_loss(impl, model, idx, targets, impl.tensor(h1 - eps * d), 1)[0]))
    np.testing.assert_allclose((up - down) / (2 * eps), np.sum(g * d), rtol=1e-6)


# ------------------------------------------------------------------ gradient by loop
@BOTH
@pytest.mark.parametrize("name", ["loop_residual", "loop_residual_2", "contractive", "parcae", "fully_looped"])
def test_grad_by_loop_sums_to_the_gradient(impl, name):
    model = make(impl, name)
    idx, targets = batch()
    h0 = h0_for(impl, model)
    got = impl.D.grad_by_loop(model, idx, targets, h0=h0)
    assert all(p.grad is None for p in model.parameters())  # the model's own .grad untouched
    kwargs = {} if h0 is None else {"h0": h0}
    _, loss = model(impl.tokens(idx), impl.tokens(targets), **kwargs)
    loss.backward()
    c = model.config
    looped = range(c.n_layer) if name.startswith("fully_looped") else range(c.loop_start, c.loop_end)
    for i, b in enumerate(model.transformer.h):
        for sub, p in b.named_parameters():
            share = got[f"transformer.h.{i}.{sub}"]  # (n, *shape)
            assert share.shape == (c.n_loops, *p.shape)
            want = impl.grad_arr(p.grad) if i in looped else np.zeros(tuple(p.shape))
            np.testing.assert_allclose(share.sum(axis=0), want, rtol=1e-9, atol=1e-13)
    first, last = got["transformer.h.1.mlp.c_fc.weight"][[0, -1]]  # block 1 is looped in every variant here
    assert np.abs(first - last).max() > 1e-8  # each loop sees its own input: the shares differ


def test_grad_by_loop_parity():
    mirror, core = build_pair("loop_residual_2", "float64")
    core.eval(), mirror.eval()
    idx, targets = batch()
    a = CORE.D.grad_by_loop(core, idx, targets)
    b = TORCH.D.grad_by_loop(mirror, idx, targets)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-13)


# ------------------------------------------------------------------ Jacobian spectral norm
@BOTH
@pytest.mark.parametrize("name,loop", [("gpt2", 1), ("loop_residual", 1), ("fully_looped", 1),
                                       ("contractive", 2), ("parcae", 0), ("parcae", 2)])
def test_jacobian_spectral_norm_against_svd(impl, name, loop):
    """Weights x10 give the top singular value a gap, so 300 iterations converge."""
    model = make(impl, name, scale=10.0)
    idx, _ = batch(B=1)
    h0 = h0_for(impl, model, B=1)
    got = impl.D.jacobian_spectral_norm(model, idx, loop=loop, h0=h0, iters=300, tol=1e-13, seed=3)
    with impl.no_grad():
        states, ctx = by_hand(impl, model, idx, h0)
    tr = model.transformer
    J = impl.full_jacobian(lambda h: tr.trunk.step(h, ctx, tr.h, loop), states[loop])  # (N, N), N = 128
    sigma = np.linalg.svd(J, compute_uv=False)
    assert sigma[1] < 0.97 * sigma[0]  # the gap that makes the test meaningful
    assert got["sigma"] <= sigma[0] * (1 + 1e-9)  # power iteration approaches from below
    np.testing.assert_allclose(got["sigma"], sigma[0], rtol=1e-7)
    assert got["iters"] == len(got["history"]) <= 300
    assert np.all(np.diff(got["history"]) >= -1e-9 * sigma[0])  # nondecreasing


def test_core_finite_difference_jvp_error():
    """The core's J v (central differences in float64) against J v from the full Jacobian."""
    impl = CORE
    model = make(impl, "loop_residual", scale=10.0)
    idx, _ = batch(B=1)
    with impl.no_grad():
        states, ctx = by_hand(impl, model, idx)
    tr = model.transformer

    def f(h):
        return tr.trunk.step(h, ctx, tr.h, 1)
    J = impl.full_jacobian(f, states[1])
    worst = 0.0
    for s in range(3):
        v = np.random.default_rng(s).standard_normal(states[1].shape)
        v /= np.linalg.norm(v)
        exact = J @ v.reshape(-1)
        worst = max(worst, np.linalg.norm(impl.D._jvp(f, states[1], v).reshape(-1) - exact) / np.linalg.norm(exact))
    print(f"core finite-difference J v: relative error {worst:.1e}")
    assert worst < 1e-8


@pytest.mark.parametrize("impl", [CORE, TORCH], ids=["core", "torch"])
def test_power_iteration_on_a_known_matrix(impl):
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    V, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    s = np.array([3.0, 2.0] + [1.0] * 10)
    A = U @ np.diag(s) @ V.T
    r = impl.D.power_iteration(lambda v: (A @ v.reshape(-1)).reshape(3, 4),
                                lambda u: (A.T @ u.reshape(-1)).reshape(3, 4), (3, 4), 200, 1e-12, 0)
    assert r["converged"] and r["iters"] < 100  # error ~ (2/3)^(2k)
    np.testing.assert_allclose(r["sigma"], 3.0, rtol=1e-10)


# ------------------------------------------------------------------ spectral radius
@BOTH
def test_spectral_radius_of_a_bar(impl):
    model = make(impl, "parcae")
    inj = model.transformer.trunk.injection
    impl.set_param(inj.a, np.random.default_rng(0).normal(0, 1, 16))
    impl.set_param(inj.dt_bias, np.random.default_rng(1).normal(0, 1, 16))
    a, dt = impl.arr(inj.a), impl.arr(inj.dt_bias)
    a_bar = np.exp(-np.log1p(np.exp(dt)) * np.exp(a))  # exp(-softplus(dt_bias) exp(a))
    np.testing.assert_allclose(impl.D.spectral_radius(model), a_bar.max(), rtol=1e-12)
    assert impl.D.spectral_radius(model) < 1


@BOTH
def test_spectral_radius_of_a_matrix_a_bar(impl):
    """An injection whose A_bar is a (C, C) matrix (a "linear" adapter): max |eigenvalue|."""
    model = make(impl, "parcae")
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    A = Q @ np.diag(np.linspace(0.1, 1.3, 16)) @ Q.T + 0.05 * rng.standard_normal((16, 16))  # not symmetric
    model.transformer.trunk.injection.A_bar = lambda: impl.tensor(A)
    np.testing.assert_allclose(impl.D.spectral_radius(model), np.max(np.abs(np.linalg.eigvals(A))), rtol=1e-12)
    model.transformer.trunk.injection.A_bar = lambda: impl.tensor(np.ones(16))  # additive: A_bar = I
    assert impl.D.spectral_radius(model) == 1.0


# ------------------------------------------------------------------ loop_table
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["gpt2", "loop_residual", "fully_looped", "contractive", "parcae", "recursive"])
def test_loop_table_parity(name, dtype):
    mirror, core = build_pair(name, dtype)
    idx, targets = batch()
    h0 = 0.3 * np.random.default_rng(5).standard_normal((2, 8, 16)) if name == "parcae" else None
    tab_t = TORCH.D.loop_table(mirror, idx, targets, h0=None if h0 is None else TORCH.tensor(h0, dtype),
                               iters=30, tol=0.0)
    tab_c = CORE.D.loop_table(core, idx, targets, h0=None if h0 is None else CORE.tensor(h0, dtype),
                              iters=30, tol=0.0)
    assert tab_t.keys() == tab_c.keys()
    n = 3 if name != "recursive" else 2
    assert tab_c["rms"].shape == (n,) and tab_c["grad_layer"].shape[0] == n
    f64 = dtype == "float64"
    for k in tab_t:
        want, got = np.asarray(tab_t[k], dtype=np.float64), np.asarray(tab_c[k], dtype=np.float64)
        rtol = (1e-7 if k == "jac_sigma" else 1e-9) if f64 else 1e-3
        scale = np.nanmax(np.abs(want)) if np.any(np.isfinite(want)) else 0.0
        atol = (1e-12 if f64 else 1e-4) * scale
        if k in ("rel_update", "lens_kl"):  # differences of nearly equal numbers
            atol = {"rel_update": 1e-10, "lens_kl": 1e-12}[k] if f64 else {"rel_update": 1e-3, "lens_kl": 1e-5}[k]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{name}/{dtype}: {k}")
    assert np.isnan(tab_c["rho"]) == (name != "parcae")
    assert np.isnan(tab_c["jac_sigma"][0]) == (name == "fully_looped")


@BOTH
def test_loop_table_agrees_with_each_diagnostic(impl):
    model = make(impl, "parcae")
    idx, targets = batch()
    h0 = h0_for(impl, model)
    tab = impl.D.loop_table(model, idx, targets, h0=h0, iters=20)
    np.testing.assert_array_equal(tab["rms"], impl.D.hidden_norms(model, idx, h0=h0)["rms"])
    np.testing.assert_array_equal(tab["lens_loss"], impl.D.logit_lens(model, idx, targets, h0=h0)["loss"])
    np.testing.assert_array_equal(tab["grad_layer"], impl.D.grad_norms(model, idx, targets, h0=h0)["layer"])
    np.testing.assert_array_equal(tab["jac_sigma"][1],
                                  impl.D.jacobian_spectral_norm(model, idx, 1, h0=h0, iters=20)["sigma"])
    assert tab["rho"] == impl.D.spectral_radius(model)


@BOTH
def test_parcae_one_drawn_h0_for_every_measurement(impl):
    """Without h0=, loop_table draws h_0 once, as the model's forward would, and leaves the
    generator where it was: two calls agree, and agree with that h_0 passed explicitly."""
    model = make(impl, "parcae")  # h0="normal": drawn at every forward
    idx, targets = batch()
    state = impl.rng_state()
    tr = model.transformer
    with impl.no_grad():
        h0, _ = tr.trunk.enter(tr.drop(tr.wte(impl.tokens(idx)) + tr.wpe.weight[:8]), tr.h)
    impl.set_rng_state(state)
    first = impl.D.loop_table(model, idx, targets, iters=5)
    second = impl.D.loop_table(model, idx, targets, iters=5)
    given = impl.D.loop_table(model, idx, targets, h0=h0, iters=5)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
        np.testing.assert_array_equal(first[k], given[k], err_msg=k)
    assert 0.5 < first["rel_update"][0] < 5  # measured from the drawn h_0, not from zeros (= 1)


@BOTH
@pytest.mark.parametrize("name", ["loop_residual", "parcae", "fully_looped"])
def test_model_left_unchanged(impl, name):
    model = make(impl, name)
    idx, targets = batch()
    model.train()
    model.transformer.h[0].eval()  # a mixed mode, to be put back as it was
    model.transformer.wpe.weight.requires_grad_(False)
    kw = {"h0": h0_for(impl, model)} if name == "parcae" else {}
    for _ in range(2):  # gradients to keep: two accumulated, unlike any one backward
        model(impl.tokens(idx), impl.tokens(targets), **kw)[1].backward()
    grads = {n: impl.grad_arr(p.grad) for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    rng = impl.rng_state()
    with impl.no_grad():
        before = impl.arr(model(impl.tokens(idx), **kw)[0])

    impl.D.loop_table(model, idx, targets, iters=5)

    assert [m.training for m in model.modules()] == modes
    for n, p in model.named_parameters():
        if grads[n] is None:
            assert p.grad is None, n
        else:
            np.testing.assert_array_equal(impl.grad_arr(p.grad), grads[n], err_msg=n)
        assert p.requires_grad == (n != "transformer.wpe.weight"), n
    assert np.array_equal(np.asarray(impl.rng_state()), np.asarray(rng))
    assert "step" not in vars(model.transformer.trunk)  # the watch is taken off
    with impl.no_grad():
        np.testing.assert_array_equal(impl.arr(model(impl.tokens(idx), **kw)[0]), before)


# ------------------------------------------------------------------ errors
@BOTH
def test_clear_errors(impl):
    model = make(impl, "fully_looped")
    idx, targets = batch()
    with pytest.raises(ValueError, match=r"targets has shape \(2, 7\) but idx has shape \(2, 8\)"):
        impl.D.logit_lens(model, idx, targets[:, :7])
    with pytest.raises(ValueError, match=r"loop=3 is out of range: this model runs n=3 loops"):
        impl.D.jacobian_spectral_norm(model, idx, loop=3)
    with pytest.raises(ValueError, match=r"loop=0: variant='fully_looped' has no state h_0"):
        impl.D.jacobian_spectral_norm(model, idx, loop=0)
    with pytest.raises(ValueError, match=r"variant='fully_looped' has no linear injection"):
        impl.D.spectral_radius(model)
    with pytest.raises(ValueError, match=r"h0= given, but variant='fully_looped' has no initial state"):
        impl.D.hidden_norms(model, idx, h0=impl.tensor(np.zeros((2, 8, 16))))
    with pytest.raises(ValueError, match=r"token ids must be a \(B, T\) array"):
        impl.D.hidden_norms(model, idx[0])
    gpt2 = make(impl, "gpt2")
    with pytest.raises(ValueError, match=r"only looped variants take n_loops"):
        impl.D.hidden_norms(gpt2, idx, n_loops=3)
    parcae = make(impl, "parcae")
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 8, 4\); it must be \(B, T, n_embd\)"):
        impl.D.hidden_norms(parcae, idx, h0=impl.tensor(np.zeros((2, 8, 4))))
    assert "step" not in vars(gpt2.transformer.trunk)  # taken off after an error too
