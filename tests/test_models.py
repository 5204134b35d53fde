"""The models of both implementations, through one suite: weight sharing, loop counts,
the trace hook, the recursive builder, Parcae's stability and training schedule,
generation. Every test runs on the NumPy core and on the PyTorch mirror (parameter
``impl``); only the two small adapters below differ between them.
"""
import types

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilooped.models import GPTConfig


def _core_adapter():
    import minilooped as ml
    from minilooped.models import GPT, GPTConfig, from_gpt2
    from minilooped.models import parcae
    from minilooped.models.fully_looped import norm


    FLOAT64 = "float64"


    def make(**fields):
        """A tiny float64 model."""
        ml.manual_seed(0)
        return GPT(GPTConfig(**{**TINY, **fields})).to(FLOAT64)


    def tokens(B=2, T=16, seed=0):
        return np.random.default_rng(seed).integers(0, 64, (B, T))


    def arr(t):
        return t.numpy() if isinstance(t, ml.Tensor) else np.asarray(t)


    def as_input(a):
        """An array as the framework's tensor (for h0)."""
        return ml.Tensor(a)


    def grads(model):
        return {n: p.grad.copy() for n, p in model.named_parameters()}


    def zero_grads(model):
        model.zero_grad(set_to_none=True)


    def load(model, sd):
        model.load_state_dict(sd)


    def state(model):
        return {k: np.array(v) for k, v in model.state_dict().items()}


    def set_param(p, a):
        p.data = np.asarray(a, dtype=p.dtype)
    return types.SimpleNamespace(**{k: v for k, v in locals().items() if not k.startswith("_")})


def _torch_adapter():
    import torch

    from minilooped.torch.models import GPT, GPTConfig, from_gpt2
    from minilooped.torch.models import parcae
    from minilooped.torch.models.fully_looped import norm

    torch.set_num_threads(1)  # tiny models: one thread beats an oversubscribed pool


    FLOAT64 = torch.float64


    def make(**fields):
        """A tiny float64 model."""
        torch.manual_seed(0)
        return GPT(GPTConfig(**{**TINY, **fields})).to(FLOAT64)


    def tokens(B=2, T=16, seed=0):
        return torch.tensor(np.random.default_rng(seed).integers(0, 64, (B, T)))


    def arr(t):
        return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


    def as_input(a):
        """An array as the framework's tensor (for h0)."""
        return torch.tensor(a)


    def grads(model):
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


    def zero_grads(model):
        model.zero_grad(set_to_none=True)


    def load(model, sd):
        model.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()})


    def state(model):
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


    def set_param(p, a):
        with torch.no_grad():
            p.copy_(torch.tensor(a))
    return types.SimpleNamespace(**{k: v for k, v in locals().items() if not k.startswith("_")})


CORE, TORCH = _core_adapter(), _torch_adapter()
# every test below takes `impl` and runs once per implementation
pytestmark = pytest.mark.parametrize("impl", [CORE, TORCH], ids=["core", "torch"])

# ------------------------------------------------------------------ the tests
TINY = dict(vocab_size=64, n_embd=32, n_head=4, block_size=16, n_layer=2)
LOOPED = {
    "loop_residual": dict(variant="loop_residual", n_layer=3, n_prelude=1, n_coda=1, n_loops=3),
    "fully_looped": dict(variant="fully_looped", n_loops=3),
    "fully_looped_LT": dict(variant="fully_looped", n_loops=3, injection="none"),
    "fully_looped_LTi": dict(variant="fully_looped", n_loops=3, injection="additive"),
    "fully_looped_LTia": dict(variant="fully_looped", n_loops=3, injection="attention_first"),
    "fully_looped_FLTres": dict(variant="fully_looped", n_loops=3, injection="residual", loss_loops="all"),
    "contractive": dict(variant="contractive", n_loops=3),
    "contractive_branch": dict(variant="contractive", n_loops=3, score_f="branch"),
    "parcae": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, h0="zeros"),
    "parcae_add": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, h0="zeros",
                       parcae_injection="add"),
    "parcae_linear": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, h0="zeros",
                          parcae_injection="linear"),
}
ALL = {"gpt2": dict(), **LOOPED}
GPT2_NAMES = ["transformer.wte.weight", "transformer.wpe.weight"] + [
    f"transformer.h.{i}.{n}" for i in range(2) for n in (
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias")] + ["transformer.ln_f.weight", "transformer.ln_f.bias",
                                                    "lm_head.weight"]


def test_gpt2_parameter_names_and_shapes(impl):
    model = impl.make()
    sd = impl.state(model)
    assert list(sd) == GPT2_NAMES
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (96, 32)  # (out, in)
    assert sd["transformer.h.1.mlp.c_proj.weight"].shape == (32, 128)
    np.testing.assert_array_equal(sd["lm_head.weight"], sd["transformer.wte.weight"])  # tied


@pytest.mark.parametrize("name", list(ALL))
def test_forward_and_state_dict_round_trip(impl, name):
    model = impl.make(**ALL[name])
    model.eval()
    idx = impl.tokens()
    logits, loss = model(idx, impl.tokens(seed=1))
    assert impl.arr(logits).shape == (2, 16, 64)
    assert np.isfinite(impl.arr(loss)).all() and abs(float(impl.arr(loss)) - np.log(64)) < 0.5
    assert model(idx)[1] is None
    other = impl.make(**{**ALL[name]})
    for p in other.parameters():  # scramble, then load
        impl.set_param(p, np.zeros(p.shape))
    impl.load(other, impl.state(model))
    other.eval()
    np.testing.assert_array_equal(impl.arr(other(idx)[0]), impl.arr(logits))


@pytest.mark.parametrize("name", list(LOOPED))
def test_num_params_independent_of_n_loops(impl, name):
    counts = {impl.make(**{**LOOPED[name], "n_loops": n}).num_params() for n in (1, 2, 7)}
    assert len(counts) == 1


@pytest.mark.parametrize("name", list(LOOPED))
def test_loop_count_changes_at_inference(impl, name):
    model = impl.make(**LOOPED[name])
    model.eval()
    idx = impl.tokens()
    default = impl.arr(model(idx)[0])
    np.testing.assert_array_equal(impl.arr(model(idx, n_loops=3)[0]), default)
    outs = []
    for n in (1, 2, 5):
        with model.trace_loops() as states:
            outs.append(impl.arr(model(idx, n_loops=n)[0]))
        assert len(states) == n
    assert not np.allclose(outs[0], outs[2])
    with pytest.raises(ValueError, match=r"n_loops=0 must be an integer >= 1"):
        model(idx, n_loops=0)


@pytest.mark.parametrize("name", list(ALL))
def test_trace_hook_leaves_outputs_unchanged(impl, name):
    model = impl.make(**ALL[name])
    model.eval()
    idx = impl.tokens()
    before = impl.arr(model(idx)[0])
    with model.trace_loops() as states:
        during = impl.arr(model(idx)[0])
    after = impl.arr(model(idx)[0])
    np.testing.assert_array_equal(during, before)
    np.testing.assert_array_equal(after, before)
    expected = model.config.n_layer if name == "gpt2" else model.config.n_loops
    assert len(states) == expected
    assert all(isinstance(s, np.ndarray) and s.shape == (2, 16, 32) for s in states)
    assert model.transformer.trunk.trace is None  # off again


@pytest.mark.parametrize("name", list(ALL))
def test_enter_step_readout_is_forward(impl, name):
    """The loop's anatomy (trunk.py): enter, n steps, readout give forward's logits."""
    model = impl.make(**ALL[name])
    model.eval()
    idx = impl.tokens()
    logits = impl.arr(model(idx)[0])
    tr = model.transformer
    trunk, blocks = tr.trunk, tr.h
    x = tr.drop(tr.wte(idx) + tr.wpe.weight[:16])
    h, ctx = trunk.enter(x, blocks)
    n = model.config.n_layer if name == "gpt2" else model.config.n_loops
    for t in range(n):
        h = trunk.step(h, ctx, blocks, t)
    lens = impl.arr(model.lm_head(tr.ln_f(trunk.readout(h, ctx, blocks))))
    np.testing.assert_allclose(lens, logits, rtol=1e-12, atol=1e-12)


def test_trace_gives_logit_lens_states(impl):
    """loop_residual without coda: the last traced state is what ln_f and the head read."""
    model = impl.make(variant="loop_residual", n_loops=3)
    model.eval()
    idx = impl.tokens()
    with model.trace_loops() as states:
        logits = impl.arr(model(idx)[0])
    lens = impl.arr(model.lm_head(model.transformer.ln_f(impl.as_input(states[-1]))))
    np.testing.assert_allclose(lens, logits, rtol=1e-12, atol=1e-12)


def _unrolled_state(sd, order):
    """The state dict of a plain GPT-2 whose block d is a copy of the shared block order[d]."""
    copies = {k: v for k, v in sd.items() if not k.startswith("transformer.h.")}
    for d, u in enumerate(order):
        for k, v in sd.items():
            if k.startswith(f"transformer.h.{u}."):
                copies[k.replace(f"transformer.h.{u}.", f"transformer.h.{d}.", 1)] = v
    return copies


def test_shared_block_gradient_is_sum_over_applications(impl):
    """2 blocks x 2 loops == a 4-block GPT-2 whose blocks are copies [b0, b1, b0, b1]."""
    looped = impl.make(variant="loop_residual", n_loops=2)
    unrolled = impl.make(n_layer=4)
    impl.load(unrolled, _unrolled_state(impl.state(looped), [0, 1, 0, 1]))
    idx, targets = impl.tokens(), impl.tokens(seed=1)
    _, loss_l = looped(idx, targets)
    loss_l.backward()
    _, loss_u = unrolled(idx, targets)
    loss_u.backward()
    assert float(impl.arr(loss_l)) == pytest.approx(float(impl.arr(loss_u)), rel=1e-12)
    g_l, g_u = impl.grads(looped), impl.grads(unrolled)
    for name, g in g_l.items():
        if name.startswith("transformer.h."):
            u, rest = name.split(".")[2], name.split(".", 3)[3]
            total = sum(g_u[f"transformer.h.{d}.{rest}"] for d in range(4) if d % 2 == int(u))
            np.testing.assert_allclose(g, total, rtol=1e-10, atol=1e-14)
        else:
            np.testing.assert_allclose(g, g_u[name], rtol=1e-10, atol=1e-14)


def test_contractive_with_dt_1_is_loop_residual(impl):
    """F = the whole block and dt = 1: h <- F(h), plain looping."""
    contractive = impl.make(variant="contractive", n_loops=3, dt=1.0)
    looped = impl.make(variant="loop_residual", n_loops=3)
    impl.load(looped, impl.state(contractive))
    idx = impl.tokens()
    np.testing.assert_allclose(impl.arr(contractive(idx)[0]), impl.arr(looped(idx)[0]), rtol=1e-12, atol=1e-12)


def test_fully_looped_first_loop_is_the_same_for_every_injection(impl):
    ref = impl.make(variant="fully_looped", n_loops=1)
    idx = impl.tokens()
    for injection in ("none", "additive", "attention_first", "residual"):
        other = impl.make(variant="fully_looped", n_loops=1, injection=injection)
        impl.load(other, impl.state(ref))
        np.testing.assert_array_equal(impl.arr(other(idx)[0]), impl.arr(ref(idx)[0]))
        assert not np.allclose(impl.arr(other(idx, n_loops=2)[0]), impl.arr(ref(idx, n_loops=2)[0]))


@pytest.mark.parametrize("injection", ["attention", "none", "residual"])
def test_fully_looped_loss_loops(impl, injection):
    """'all' averages the per-loop losses; 'last_third' of K loops is loops range(2K // 3, K)
    (their FEW): the last of 3, the last 2 of 4."""
    idx, targets = impl.tokens(), impl.tokens(seed=1)
    per_loop = []
    base = impl.make(variant="fully_looped", n_loops=4, injection=injection)
    for n in (1, 2, 3, 4):
        per_loop.append(float(impl.arr(base(idx, targets, n_loops=n)[1])))
    for n, loss_loops, want in ((3, "all", np.mean(per_loop[:3])), (3, "last_third", per_loop[2]),
                                (4, "last_third", np.mean(per_loop[2:]))):
        model = impl.make(variant="fully_looped", n_loops=n, loss_loops=loss_loops, injection=injection)
        impl.load(model, impl.state(base))
        assert float(impl.arr(model(idx, targets)[1])) == pytest.approx(want, rel=1e-12)


def _fully_looped_by_hand(impl, model, idx, first_layer_only=False, residual=False):
    """The logits of FLT / LT_ia / FLT_res written out from their code: every loop restarts
    at n(E); queries from h^{k-1} at every layer (FLT) or layer 0 (LT_ia), or x = n(x + h)
    before every layer (FLT_res)."""
    tr = model.transformer
    E = tr.wte(idx) + tr.wpe.weight[:16]  # (B, T, C)
    h = None
    for k in range(model.config.n_loops):
        x = impl.norm(E)
        for l, block in enumerate(tr.h):
            if residual:
                x = block(x if h is None else impl.norm(x + h))
            else:
                x = block(x, h if (l == 0 or not first_layer_only) else None)
        h = impl.norm(x)
    return impl.arr(model.lm_head(tr.ln_f(h)))


@pytest.mark.parametrize("injection", ["attention", "attention_first", "residual"])
def test_fully_looped_modes_by_hand(impl, injection):
    model = impl.make(variant="fully_looped", n_loops=3, injection=injection)
    model.eval()
    idx = impl.tokens()
    want = _fully_looped_by_hand(impl, model, idx, first_layer_only=injection == "attention_first",
                                 residual=injection == "residual")
    np.testing.assert_allclose(impl.arr(model(idx)[0]), want, rtol=1e-12, atol=1e-12)


def test_fully_looped_LT_ia_is_FLT_with_one_layer_and_differs_with_two(impl):
    """LT_ia injects the queries at layer 0 only: with one layer it is FLT, with two it is not."""
    idx = impl.tokens()
    for n_layer, same in ((1, True), (2, False)):
        flt = impl.make(variant="fully_looped", n_layer=n_layer, n_loops=2)
        lt_ia = impl.make(variant="fully_looped", n_layer=n_layer, n_loops=2, injection="attention_first")
        impl.load(lt_ia, impl.state(flt))
        a, b = impl.arr(flt(idx)[0]), impl.arr(lt_ia(idx)[0])
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12) == same


# ------------------------------------------------------------------------ recursive
@pytest.mark.parametrize("sharing", ["cycle", "sequence"])
@pytest.mark.parametrize("init", ["stepwise", "average", "lower"])
def test_recursive_full_rank_reproduces_the_original(impl, sharing, init):
    source = impl.make(n_layer=4)
    idx = impl.tokens()
    rec = impl.from_gpt2(source, 2, sharing=sharing, init=init, lora_rank=32)  # 32 = n_embd: full
    assert rec.config.n_layer == 2 and rec.config.n_loops == 2
    np.testing.assert_allclose(impl.arr(rec(idx)[0]), impl.arr(source(idx)[0]), rtol=1e-10, atol=1e-12)


def test_recursive_rank_0_is_the_strictly_shared_model(impl):
    source = impl.make(n_layer=4)
    idx = impl.tokens()
    cycle = impl.from_gpt2(source, 2, sharing="cycle", init="stepwise", lora_rank=0)
    assert not any(k.startswith("transformer.trunk.") for k in impl.state(cycle))
    looped = impl.make(variant="loop_residual", n_loops=2)  # |b0 b1|b0 b1|
    impl.load(looped, impl.state(cycle))
    np.testing.assert_allclose(impl.arr(cycle(idx)[0]), impl.arr(looped(idx)[0]), rtol=1e-12, atol=1e-12)
    sequence = impl.from_gpt2(source, 2, sharing="sequence", init="average", lora_rank=0)
    unrolled = impl.make(n_layer=4)  # b0 b0 b1 b1
    sd = impl.state(sequence)
    impl.load(unrolled, _unrolled_state(sd, [0, 0, 1, 1]))
    np.testing.assert_allclose(impl.arr(sequence(idx)[0]), impl.arr(unrolled(idx)[0]), rtol=1e-12, atol=1e-12)
    # average init: the shared block is the mean of its tied layers
    src = impl.state(source)
    np.testing.assert_allclose(sd["transformer.h.1.mlp.c_fc.weight"],
                               (src["transformer.h.2.mlp.c_fc.weight"] + src["transformer.h.3.mlp.c_fc.weight"]) / 2)


def test_recursive_stepwise_and_lower_sources(impl):
    source = impl.make(n_layer=4)
    src = impl.state(source)
    step = impl.state(impl.from_gpt2(source, 2, init="stepwise"))  # round(linspace(0, 3, 2)) = [0, 3]
    low = impl.state(impl.from_gpt2(source, 2, init="lower"))  # [0, 1]
    key = "attn.c_attn.weight"
    np.testing.assert_array_equal(step[f"transformer.h.1.{key}"], src[f"transformer.h.3.{key}"])
    np.testing.assert_array_equal(low[f"transformer.h.1.{key}"], src[f"transformer.h.1.{key}"])


def test_recursive_lora_rank_truncates_and_counts(impl):
    source = impl.make(n_layer=4)
    idx = impl.tokens()
    errors = []
    for r in (1, 8, 32):
        rec = impl.from_gpt2(source, 1, lora_rank=r)
        errors.append(np.abs(impl.arr(rec(idx)[0]) - impl.arr(source(idx)[0])).max())
        assert impl.state(rec)["transformer.trunk.relax.3.attn.c_attn.A"].shape == (r, 32)
        assert impl.state(rec)["transformer.trunk.relax.3.mlp.c_proj.B"].shape == (32, r)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-10
    base = impl.from_gpt2(source, 1).num_params()
    assert impl.from_gpt2(source, 1, lora_rank=1).num_params() > base


def test_recursive_early_exit(impl):
    source = impl.make(n_layer=4)
    rec = impl.from_gpt2(source, 2, lora_rank=4)
    idx = impl.tokens()
    with rec.trace_loops() as states:
        full = impl.arr(rec(idx)[0])
    assert len(states) == 2
    early = impl.arr(rec(idx, exit_loop=1)[0])
    lens = impl.arr(rec.lm_head(rec.transformer.ln_f(impl.as_input(states[0]))))
    np.testing.assert_allclose(early, lens, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(impl.arr(rec(idx, n_loops=1)[0]), early)
    np.testing.assert_array_equal(impl.arr(rec(idx, exit_loop=2)[0]), full)
    with pytest.raises(ValueError, match=r"exit_loop=3 is past the last loop"):
        rec(idx, exit_loop=3)


def test_recursive_builder_errors(impl):
    with pytest.raises(ValueError, match=r"n_unique=3 must divide .* n_layer=4.*\[1, 2, 4\]"):
        impl.from_gpt2(impl.make(n_layer=4), 3)
    with pytest.raises(ValueError, match=r"needs a variant='gpt2' model"):
        impl.from_gpt2(impl.make(variant="loop_residual", n_loops=2), 1)


# --------------------------------------------------------------------------- parcae
@given(a=st.lists(st.floats(-10, 10), min_size=4, max_size=4),
       dt_bias=st.lists(st.floats(-10, 10), min_size=4, max_size=4))
def test_parcae_spectral_radius_below_one(impl, a, dt_bias):
    """rho(A_bar) < 1 for any parameters: A_bar = exp(-softplus(dt_bias) exp(a)) is diagonal."""
    inj = impl.parcae.DiagonalInjection(GPTConfig(vocab_size=8, n_embd=4, n_head=1, block_size=4,
                                                  n_layer=1)).to(impl.FLOAT64)
    impl.set_param(inj.a, np.array(a))
    impl.set_param(inj.dt_bias, np.array(dt_bias))
    A_bar = np.diag(impl.arr(inj.A_bar()))
    rho = np.max(np.abs(np.linalg.eigvals(A_bar)))
    assert 0.0 <= rho < 1.0


def test_parcae_initialisation(impl):
    """As the authors' code: A_bar = sqrt(1/5), B = I, C = sqrt(2/5) Q with Q orthogonal (and
    random), the linear adapter a normal of std sqrt(2 / (5 C)) cut at 3 std."""
    model = impl.make(**LOOPED["parcae"])
    trunk = model.transformer.trunk
    np.testing.assert_allclose(impl.arr(trunk.injection.A_bar()), np.sqrt(1 / 5), rtol=1e-6)  # set in float32
    np.testing.assert_array_equal(impl.arr(trunk.injection.B.weight), np.eye(32))
    C = impl.arr(trunk.C.weight)
    np.testing.assert_allclose(C @ C.T, 2 / 5 * np.eye(32), atol=1e-6)  # orthogonal times sqrt(2/5)
    assert np.abs(C - np.diag(np.diag(C))).max() > 0.01  # not a multiple of the identity
    W = impl.arr(impl.make(**LOOPED["parcae_linear"]).transformer.trunk.injection.adapter.weight)
    std = np.sqrt(2 / (5 * 32))
    assert W.shape == (32, 64) and np.abs(W).max() <= 3 * std * (1 + 1e-6) and 0.8 < W.std() / std < 1.0


def test_parcae_truncated_backprop(impl):
    """Gradients of a T-loop step == those of a k-loop run started from h_{T-k}."""
    model = impl.make(**{**LOOPED["parcae"], "backprop_loops": 2})
    idx, targets = impl.tokens(), impl.tokens(seed=1)
    model.eval()
    with model.trace_loops() as states:
        model(idx, n_loops=3)
    h3 = states[-1]  # h after T - k = 3 loops
    model.train()
    _, loss = model(idx, targets, n_loops=5)  # 3 loops without gradient, then 2 with
    loss.backward()
    g_trunc = impl.grads(model)
    impl.zero_grads(model)
    _, loss2 = model(idx, targets, n_loops=2, h0=impl.as_input(h3))
    loss2.backward()
    assert float(impl.arr(loss)) == pytest.approx(float(impl.arr(loss2)), rel=1e-12)
    for n, g in impl.grads(model).items():
        np.testing.assert_allclose(g_trunc[n], g, rtol=1e-9, atol=1e-13, err_msg=n)
    # in eval mode every loop carries gradients: the prelude's gradient changes
    impl.zero_grads(model)
    model.eval()
    model(idx, targets, n_loops=5)[1].backward()
    assert not np.allclose(impl.grads(model)["transformer.h.0.mlp.c_fc.weight"],
                           g_trunc["transformer.h.0.mlp.c_fc.weight"])


def test_parcae_sample_loops_and_random_h0(impl):
    model = impl.make(**{**LOOPED["parcae"], "h0": "normal", "n_loops": 8, "loop_sampling": "batch"})
    ts = [model.sample_loops(np.random.default_rng(s)) for s in range(300)]
    assert all(isinstance(t, int) for t in ts) and min(ts) >= 1 and abs(np.mean(ts) - 8) < 0.6
    assert model.sample_loops(np.random.default_rng(5)) == model.sample_loops(np.random.default_rng(5))
    model.eval()
    idx = impl.tokens()
    a, b = impl.arr(model(idx)[0]), impl.arr(model(idx)[0])
    assert not np.array_equal(a, b)  # h_0 is drawn every call
    h0 = model.transformer.trunk.initial_state(impl.as_input(np.zeros((2, 16, 32))))
    assert np.abs(impl.arr(h0)).max() <= 0.06 and 0.01 < impl.arr(h0).std() < 0.03  # N(0, 0.02) cut at 3 std
    with pytest.raises(ValueError, match=r"sample_loops is Parcae's"):
        impl.make().sample_loops(np.random.default_rng(0))


def test_parcae_sample_loops_per_sequence(impl):
    model = impl.make(**{**LOOPED["parcae"], "n_loops": 8})  # loop_sampling="sequence", the default
    ts = model.sample_loops(np.random.default_rng(0), 300)
    assert ts.shape == (300,) and ts.dtype == np.int64 and ts.min() >= 1 and abs(ts.mean() - 8) < 0.6
    np.testing.assert_array_equal(model.sample_loops(np.random.default_rng(5), 4),
                                  model.sample_loops(np.random.default_rng(5), 4))
    with pytest.raises(ValueError, match=r"one loop count per sequence; pass the batch size"):
        model.sample_loops(np.random.default_rng(0))


@pytest.mark.parametrize("injection", ["diagonal", "add", "linear"])
@pytest.mark.parametrize("train", [False, True])
def test_parcae_per_sequence_loops_are_each_sequence_alone(impl, injection, train):
    """Counts (3, 1, 5) on a batch of 3 == each sequence run alone with its count: logits,
    loss and gradients, in eval mode and in train mode (the last min(T_i, 2) loops carry
    gradients)."""
    model = impl.make(**{**LOOPED["parcae"], "backprop_loops": 2, "parcae_injection": injection})
    model.train(train)
    idx, targets = impl.tokens(B=3), impl.tokens(B=3, seed=1)
    h0 = 0.02 * np.random.default_rng(2).standard_normal((3, 16, 32))
    counts = np.array([3, 1, 5])
    logits, loss = model(idx, targets, n_loops=counts, h0=impl.as_input(h0))
    loss.backward()
    g_batch = impl.grads(model)
    g_alone, losses = None, []
    for i, T in enumerate(counts.tolist()):
        impl.zero_grads(model)
        logits_i, loss_i = model(idx[i:i + 1], targets[i:i + 1], n_loops=T, h0=impl.as_input(h0[i:i + 1]))
        loss_i.backward()
        np.testing.assert_allclose(impl.arr(logits)[i], impl.arr(logits_i)[0], rtol=1e-10, atol=1e-12)
        losses.append(float(impl.arr(loss_i)))
        g = impl.grads(model)
        g_alone = g if g_alone is None else {n: g_alone[n] + g[n] for n in g}
    assert float(impl.arr(loss)) == pytest.approx(np.mean(losses), rel=1e-12)  # rows of equal length
    for n, g in g_batch.items():
        np.testing.assert_allclose(g, g_alone[n] / 3, rtol=1e-8, atol=1e-13, err_msg=n)
    with model.trace_loops() as states:
        model(idx, n_loops=counts, h0=impl.as_input(h0))
    assert len(states) == 5  # the batch runs max(T_i) loops


def test_parcae_per_sequence_counts_are_checked(impl):
    model = impl.make(**LOOPED["parcae"])
    idx = impl.tokens()
    for bad in (np.array([2, 0]), np.array([2, 3, 4]), np.array([2.0, 3.0]), np.array([[2, 3]])):
        with pytest.raises(ValueError, match=r"one per sequence \(shape \(2,\)\)"):
            model(idx, n_loops=bad)
    np.testing.assert_array_equal(impl.arr(model(idx, n_loops=np.array([2, 2]))[0]),
                                  impl.arr(model(idx, n_loops=2)[0]))


def test_parcae_A_bar_of_each_injection(impl):
    """add: A_bar = I (ones); linear: A_bar = W_h, the h-block of the adapter, and the
    injection is W_h h + W_e e; diagonal: the map the injection applies to h."""
    h = np.random.default_rng(0).standard_normal((2, 16, 32))
    e = np.random.default_rng(1).standard_normal((2, 16, 32))
    zeros = np.zeros_like(h)
    add = impl.make(**LOOPED["parcae_add"]).transformer.trunk.injection
    np.testing.assert_array_equal(impl.arr(add.A_bar()), np.ones(32))
    np.testing.assert_array_equal(impl.arr(add(impl.as_input(h), impl.as_input(e))), h + e)
    lin = impl.make(**LOOPED["parcae_linear"]).transformer.trunk.injection
    W = impl.arr(lin.adapter.weight)  # (C, 2C)
    np.testing.assert_array_equal(impl.arr(lin.A_bar()), W[:, :32])
    np.testing.assert_allclose(impl.arr(lin(impl.as_input(h), impl.as_input(e))), h @ W[:, :32].T + e @ W[:, 32:].T,
                               rtol=1e-12, atol=1e-12)
    for inj in (add, lin, impl.make(**LOOPED["parcae"]).transformer.trunk.injection):
        A = impl.arr(inj.A_bar())
        A = np.diag(A) if A.ndim == 1 else A
        u0 = impl.arr(inj(impl.as_input(h), impl.as_input(zeros)))  # e = 0: u = A_bar h
        np.testing.assert_allclose(u0, h @ A.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("injection", ["diagonal", "add", "linear"])
def test_parcae_optim_groups(impl, injection):
    """a, dt_bias, B and C take no weight decay (the authors' _no_weight_decay group); the
    linear adapter and the blocks' matrices do; vectors never do."""
    model = impl.make(**{**LOOPED["parcae"], "parcae_injection": injection})
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in model.optim_groups(0.1))
    assert decay | no_decay == set(names.values()) and not decay & no_decay
    exempt = {"transformer.trunk.C.weight"} | ({"transformer.trunk.injection.a", "transformer.trunk.injection.dt_bias",
                                                "transformer.trunk.injection.B.weight"} if injection == "diagonal" else set())
    assert exempt <= no_decay
    matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert decay == matrices - exempt
    assert ("transformer.trunk.injection.adapter.weight" in decay) == (injection == "linear")


# ------------------------------------------------------------------------ generation
def test_generate_seeded_greedy_and_cropped(impl):
    model = impl.make(variant="loop_residual", n_loops=2)
    idx = impl.tokens(T=4)
    a = impl.arr(model.generate(idx, 20, temperature=0.9, top_k=8, seed=7))
    b = impl.arr(model.generate(idx, 20, temperature=0.9, top_k=8, seed=7))
    c = impl.arr(model.generate(idx, 20, temperature=0.9, top_k=8, seed=8))
    assert a.shape == (2, 24)  # beyond block_size = 16: the context is cropped
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[:, :4], impl.arr(idx))
    greedy = impl.arr(model.generate(idx, 5, temperature=0))
    np.testing.assert_array_equal(impl.arr(model.generate(idx, 5, top_k=1, seed=1)), greedy)
    model.eval()
    step = impl.arr(model(idx)[0])[:, -1].argmax(-1)
    np.testing.assert_array_equal(greedy[:, 4], step)
    with pytest.raises(ValueError, match=r"temperature=-1 must be >= 0"):
        model.generate(idx, 1, temperature=-1)
    with pytest.raises(ValueError, match=r"top_k=0 must be >= 1"):
        model.generate(idx, 1, top_k=0)


def test_generate_parcae_random_h0_repeats_with_seed(impl):
    model = impl.make(**{**LOOPED["parcae"], "h0": "normal"})
    idx = impl.tokens(T=4)
    a = impl.arr(model.generate(idx, 6, seed=3))
    b = impl.arr(model.generate(idx, 6, seed=3))
    np.testing.assert_array_equal(a, b)


def test_forward_errors(impl):
    model = impl.make()
    with pytest.raises(ValueError, match=r"T=17 tokens but block_size=16"):
        model(impl.tokens(T=17))
    with pytest.raises(ValueError, match=r"n_loops=2: a variant='gpt2' model"):
        model(impl.tokens(), n_loops=2)
    with pytest.raises(TypeError):
        impl.make(variant="loop_residual", n_loops=2)(impl.tokens(), h0=None)
