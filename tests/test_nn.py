"""nn.Module and the layers: registration, state dicts, modes, dtypes, and equality with
torch.nn layers that hold the same weights."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import minilooped as ml
import minilooped.functional as F
from minilooped import nn
from minilooped.testing import assert_close

# float64 agreement with torch.nn: same formulas, different summation order
RTOL, ATOL = 1e-10, 1e-12


class Tied(nn.Module):
    """GPT-2's pattern: the output projection is the token embedding."""

    def __init__(self, v=7, d=4):
        super().__init__()
        self.wte = nn.Embedding(v, d)
        self.blocks = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d, bias=False)])
        self.ln_f = nn.LayerNorm(d)
        self.drop = nn.Dropout(0.5)
        self.lm_head = nn.Linear(d, v, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.drop(self.wte(idx))
        for b in self.blocks:
            x = F.gelu(b(x))
        return self.lm_head(self.ln_f(x))


# ------------------------------------------------------------------ Module
def test_named_parameters_lists_a_tied_weight_once():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["wte.weight", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "ln_f.weight", "ln_f.bias"]
    assert len(list(m.parameters())) == 6
    assert m.lm_head.weight is m.wte.weight
    # the state dict names it twice, as torch does (each module's view of its weights)
    assert list(m.state_dict()) == ["wte.weight", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                                    "ln_f.weight", "ln_f.bias", "lm_head.weight"]


def test_modules_children_and_submodules():
    m = Tied()
    assert [n for n, _ in m.named_children()] == ["wte", "blocks", "ln_f", "drop", "lm_head"]
    assert [n for n, _ in m.named_modules()][:4] == ["", "wte", "blocks", "blocks.0"]
    assert m.get_submodule("blocks.1") is m.blocks[1] and m.blocks[-1] is m.blocks[1]
    assert len(m.blocks) == 2 and isinstance(m.blocks[0:1], nn.ModuleList)
    assert "Linear(in_features=4, out_features=4, bias=False)" in repr(m)


def test_reassigning_an_attribute_replaces_the_registration():
    m = nn.Linear(2, 3)
    m.bias = None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    m.extra = nn.Parameter(np.zeros(2))
    del m.extra
    assert [n for n, _ in m.named_parameters()] == ["weight"]


def test_state_dict_round_trip():
    ml.manual_seed(0)
    a, b = Tied(), Tied()
    ml.manual_seed(1)
    b = Tied()
    assert not np.array_equal(a.wte.weight.data, b.wte.weight.data)
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        np.testing.assert_array_equal(pa, pb)
    assert b.lm_head.weight is b.wte.weight  # still tied after loading
    a.eval(), b.eval()
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(a(idx).data, b(idx).data)


def test_load_state_dict_copies_the_arrays():
    m = nn.Linear(2, 2)
    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    sd["weight"][...] = 7.0
    assert not np.any(m.weight.data == 7.0)


def test_load_state_dict_accepts_a_tied_checkpoint_with_one_name():
    m = Tied()
    sd = OrderedDict(m.state_dict())
    del sd["lm_head.weight"]
    missing, unexpected = m.load_state_dict(sd)
    assert missing == [] and unexpected == []


def test_buffers_persistent_and_not():
    m = nn.Module()
    m.register_buffer("mask", np.tril(np.ones((3, 3))))
    m.register_buffer("scratch", np.zeros(2), persistent=False)
    assert list(m.state_dict()) == ["mask"]
    assert [n for n, _ in m.named_buffers()] == ["mask", "scratch"]
    assert list(m.parameters()) == []


def test_train_eval_flags_and_dropout():
    m = Tied()
    assert all(mod.training for mod in m.modules())
    m.eval()
    assert not any(mod.training for mod in m.modules())
    x = ml.ones(20, 30)
    np.testing.assert_array_equal(m.drop(x).data, x.data)
    m.train()
    assert m.drop.training
    y = m.drop(x).data
    assert np.any(y == 0) and np.allclose(y[y != 0], 2.0)


def test_to_float64_casts_parameters_and_drops_grads():
    m = Tied()
    m.eval()
    loss = m(np.array([1, 2])).sum()
    loss.backward()
    m.to(ml.float64)
    assert all(p.dtype == ml.float64 and p.grad is None for p in m.parameters())
    assert m.lm_head.weight is m.wte.weight
    assert m(np.array([1, 2])).dtype == ml.float64
    m.float()
    assert all(p.dtype == ml.float32 for p in m.parameters())
    m.double().to("cpu")
    assert all(p.dtype == ml.float64 and p.device == "cpu" for p in m.parameters())


def test_zero_grad_requires_grad_and_apply():
    m = Tied()
    m.eval()
    m(np.array([0, 1])).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen[-1] == "Tied" and seen.count("Linear") == 3


def test_parameter_is_a_float_leaf_that_requires_grad():
    p = nn.Parameter(np.arange(3))
    assert p.requires_grad and p.dtype == ml.float32 and p.is_leaf
    q = nn.Parameter(ml.Tensor(np.ones(2)))
    assert q.dtype == ml.float64
    assert repr(p).startswith("Parameter containing:")


def test_sequential_and_module_dict():
    s = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    x = ml.randn(5, 3)
    np.testing.assert_allclose(s(x).data, s[2](s[1](s[0](x))).data)
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    d = nn.ModuleDict({"a": nn.Linear(2, 2)})
    d["b"] = nn.Identity()
    assert list(d.keys()) == ["a", "b"] and "a" in d and len(d) == 2
    assert [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias"]


def test_default_initialisation_matches_torch_rules():
    ml.manual_seed(0)
    lin = nn.Linear(100, 50)
    bound = 1 / np.sqrt(100)
    assert np.abs(lin.weight.data).max() <= bound and np.abs(lin.bias.data).max() <= bound
    assert lin.weight.data.std() > 0.8 * bound / np.sqrt(3)   # U(-b, b) has sd b / sqrt(3)
    emb = nn.Embedding(200, 50)                               # N(0, 1)
    assert abs(emb.weight.data.mean()) < 0.05 and abs(emb.weight.data.std() - 1) < 0.05
    ln = nn.LayerNorm(5)
    assert np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
    assert nn.LayerNorm(5, bias=False).bias is None and nn.RMSNorm(4).weight.data.tolist() == [1, 1, 1, 1]


def test_init_functions():
    ml.manual_seed(3)
    p = nn.Parameter(np.zeros((300, 300), np.float32))
    nn.init.normal_(p, mean=1.0, std=0.02)
    assert p.dtype == ml.float32 and abs(p.data.mean() - 1.0) < 1e-3 and abs(p.data.std() - 0.02) < 1e-3
    nn.init.zeros_(p)
    assert np.all(p.data == 0)
    nn.init.ones_(p)
    assert np.all(p.data == 1)


# ------------------------------------------------- layers equal torch.nn's
def _copy_into_torch(core, tmod):
    with torch.no_grad():
        for name, p in core.named_parameters():
            dict(tmod.named_parameters())[name].copy_(torch.from_numpy(np.array(p.data)))


def _compare(core, tmod, x_np, ids=False):
    """Forward and backward of a core layer and a torch layer with the same weights (float64)."""
    core.to(ml.float64)
    tmod.double()
    _copy_into_torch(core, tmod)
    if ids:
        x, tx = x_np, torch.from_numpy(x_np)
    else:
        x = ml.Tensor(x_np, requires_grad=True)
        tx = torch.tensor(x_np, requires_grad=True)
    y, ty = core(x), tmod(tx)
    assert_close(y.data, ty.detach().numpy(), RTOL, ATOL, what="output")
    w = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(w)
    ty.backward(torch.from_numpy(w))
    if not ids:
        assert_close(x.grad, tx.grad.numpy(), RTOL, ATOL, what="input grad")
    tparams = dict(tmod.named_parameters())
    assert [n for n, _ in core.named_parameters()] == list(tparams)
    for name, p in core.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), RTOL, ATOL, what=f"grad of {name}")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5), (5,)])
def test_linear_equals_torch(bias, shape):
    x = np.random.default_rng(1).standard_normal(shape)
    _compare(nn.Linear(5, 4, bias=bias), torch.nn.Linear(5, 4, bias=bias), x)


def test_embedding_equals_torch():
    ids = np.array([[1, 2, 2], [0, 6, 1]])
    _compare(nn.Embedding(7, 3), torch.nn.Embedding(7, 3), ids, ids=True)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layer_norm_equals_torch(bias, eps):
    ml.manual_seed(2)
    core, tmod = nn.LayerNorm(6, eps=eps, bias=bias), torch.nn.LayerNorm(6, eps=eps, bias=bias)
    core.to(ml.float64)
    nn.init.normal_(core.weight)          # not the trivial ones/zeros
    if bias:
        nn.init.normal_(core.bias)
    _compare(core, tmod, np.random.default_rng(2).standard_normal((2, 3, 6)) * 3 + 1)


def test_layer_norm_without_affine_equals_torch():
    _compare(nn.LayerNorm((3, 4), elementwise_affine=False), torch.nn.LayerNorm((3, 4), elementwise_affine=False),
             np.random.default_rng(3).standard_normal((2, 3, 4)))


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm_equals_torch(eps, affine):
    core = nn.RMSNorm(5, eps=eps, elementwise_affine=affine)
    tmod = torch.nn.RMSNorm(5, eps=eps, elementwise_affine=affine)
    if affine:
        core.to(ml.float64)
        nn.init.normal_(core.weight)
    _compare(core, tmod, np.random.default_rng(4).standard_normal((3, 5)))


def test_gelu_tanh_equals_torch():
    _compare(nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh"),
             np.random.default_rng(5).standard_normal((4, 5)) * 3)


def test_dropout_in_eval_equals_torch():
    core, tmod = nn.Dropout(0.3), torch.nn.Dropout(0.3)
    core.eval(), tmod.eval()
    _compare(core, tmod, np.random.default_rng(6).standard_normal((4, 5)))


def test_layers_default_to_float32_and_keep_it():
    x = ml.randn(2, 5)
    layers = (nn.Linear(5, 3), nn.LayerNorm(5), nn.RMSNorm(5), nn.GELU(), nn.Dropout(0.1), nn.ReLU(), nn.Identity())
    for layer in layers:
        assert layer(x).dtype == ml.float32, type(layer).__name__
    assert nn.Embedding(4, 3)(np.array([1, 3])).dtype == ml.float32


def test_whole_model_equals_torch_after_loading_its_state_dict():
    """A torch module's state_dict (torch tensors) loads into the core module unchanged."""
    class TTied(torch.nn.Module):
        def __init__(self, v=7, d=4):
            super().__init__()
            self.wte = torch.nn.Embedding(v, d)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(d, d), torch.nn.Linear(d, d, bias=False)])
            self.ln_f = torch.nn.LayerNorm(d)
            self.drop = torch.nn.Dropout(0.5)
            self.lm_head = torch.nn.Linear(d, v, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, idx):
            x = self.drop(self.wte(idx))
            for b in self.blocks:
                x = torch.nn.functional.gelu(b(x), approximate="tanh")
            return self.lm_head(self.ln_f(x))

    torch.manual_seed(0)
    tm = TTied().double().eval()
    cm = Tied().double().eval()
    cm.load_state_dict(tm.state_dict())
    idx = np.array([[0, 3, 6, 3]])
    assert_close(cm(idx).data, tm(torch.from_numpy(idx)).detach().numpy(), RTOL, ATOL, what="logits")
