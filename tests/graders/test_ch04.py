"""Graders of chapter 4 (exercises/ch04_gpt2.py): causal attention, multi-head
self-attention, the transformer block, FLOPs per token. Oracles: PyTorch (functional
and the mirror's modules, with the same weights) in float64, finite differences,
causality, nanoGPT's GPT-2 numbers."""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.grading.checks import assert_close, assert_equal, check, check_gradients
from minilooped.models import GPT, GPTConfig
from minilooped.models.attention import CausalSelfAttention as LibraryAttention
from minilooped.models.block import Block as LibraryBlock
from minilooped.torch.models import GPT as TorchGPT
from minilooped.torch.models.attention import CausalSelfAttention as TorchAttention
from minilooped.torch.models.block import Block as TorchBlock

torch.set_num_threads(1)


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------- ex4_1 causal attention
def _qkv(shape_q=(2, 3, 5, 4), shape_kv=(2, 3, 5, 4), seed=0):
    r = _rng(seed)
    return r.standard_normal(shape_q), r.standard_normal(shape_kv), r.standard_normal(shape_kv[:-1] + (6,))


def _sdpa_check(impl, q, k, v, what, **kwargs):
    tq, tk, tv = (ml.Tensor(a, requires_grad=True) for a in (q, k, v))
    out = impl(tq, tk, tv, **kwargs)
    check(isinstance(out, ml.Tensor), f"{what}: return a Tensor, got {type(out).__name__}",
          hint="build the result from Tensor ops so autograd can differentiate it")
    pq, pk, pv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    expected = torch.nn.functional.scaled_dot_product_attention(pq, pk, pv, **kwargs)
    mask_hint = "mask j > i with -inf before the softmax: masked_fill(np.triu(np.ones((L, S), bool), k=1), -inf)"
    scale_hint = "att = q @ k.transpose(-2, -1) * scale, scale = 1/sqrt(E) when None; softmax over the last dim"
    hint = mask_hint if kwargs.get("is_causal") else scale_hint
    assert_close(out, expected, f"{what}: output", hint=hint)
    g = _rng(9).standard_normal(expected.shape)
    out.backward(g)
    expected.backward(torch.tensor(g))
    for name, mine, theirs in (("q", tq, pq), ("k", tk, pk), ("v", tv, pv)):
        assert_close(mine.grad, theirs.grad, f"{what}: gradient of {name}", hint="use Tensor ops only, no .data")


@pytest.mark.ex4_1
def test_attention_causal_matches_torch(impl):
    _sdpa_check(impl, *_qkv(), "causal attention, q, k, v (2, 3, 5, 4)", is_causal=True)


@pytest.mark.ex4_1
def test_attention_full_and_scaled(impl):
    q, k, v = _qkv((2, 4, 3), (2, 6, 3))
    _sdpa_check(impl, q, k, v, "non-causal attention, q (2, 4, 3), k (2, 6, 3)")
    _sdpa_check(impl, q, k, v, "non-causal attention with scale=0.3", scale=0.3)


@pytest.mark.ex4_1
def test_attention_does_not_look_ahead(impl):
    q, k, v = _qkv((1, 2, 6, 4), (1, 2, 6, 4))
    base = impl(ml.Tensor(q), ml.Tensor(k), ml.Tensor(v), is_causal=True).numpy()
    k2, v2 = k.copy(), v.copy()
    k2[..., 4:, :] += 10.0
    v2[..., 4:, :] -= 10.0
    moved = impl(ml.Tensor(q), ml.Tensor(k2), ml.Tensor(v2), is_causal=True).numpy()
    assert_close(moved[..., :4, :], base[..., :4, :], "outputs at positions 0-3 after changing keys and values "
                 "at positions 4-5", hint="with is_causal=True position i may only attend to positions j <= i")


@pytest.mark.ex4_1
def test_attention_gradient_check(impl):
    q, k, v = _qkv((1, 3, 2), (1, 3, 2))
    check_gradients(lambda q, k, v: impl(q, k, v, is_causal=True), [q, k, v], "causal attention")


# ------------------------------------------------------ ex4_2, ex4_3 modules
CONFIG = GPTConfig(block_size=8, vocab_size=32, n_layer=1, n_head=4, n_embd=16, dropout=0.0, bias=True)


def _twins(impl, library_cls, torch_cls, config=CONFIG, seed=0):
    """The student's module, and the mirror's, with the library module's (random) weights, float64."""
    ml.manual_seed(seed)
    ref = library_cls(config)
    r = _rng(seed)
    for p in ref.parameters():  # random biases and LayerNorm weights too: every path is exercised
        p.data[...] = r.standard_normal(p.shape) * 0.3
    sd = {k: v.astype(np.float64) for k, v in ref.state_dict().items()}
    mine = impl(config).double()
    mine.load_state_dict(sd)
    theirs = torch_cls(config).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    return mine.eval(), theirs.eval()


def _module_check(impl, library_cls, torch_cls, what, hint, config=CONFIG, B=2, T=6):
    mine, theirs = _twins(impl, library_cls, torch_cls, config)
    x = _rng(1).standard_normal((B, T, config.n_embd))
    tx, px = ml.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out = mine(tx)
    check(isinstance(out, ml.Tensor), f"{what}: forward must return a Tensor, got {type(out).__name__}")
    expected = theirs(px)
    assert_close(out, expected, f"{what}: output for x {x.shape}", hint=hint)
    g = _rng(2).standard_normal(expected.shape)
    out.backward(g)
    expected.backward(torch.tensor(g))
    assert_close(tx.grad, px.grad, f"{what}: gradient of x", hint="use the modules and Tensor ops only, no .data")
    tparams = dict(theirs.named_parameters())
    for name, p in mine.named_parameters():
        assert_close(p.grad, tparams[name].grad, f"{what}: gradient of {name}")


_HEADS_HINT = ("q, k, v: (B, T, C) -> view(B, T, n_head, hs) -> transpose(1, 2); after attention transpose(1, 2) "
               "back, then view(B, T, C) and c_proj")


@pytest.mark.ex4_2
def test_self_attention_matches_the_mirror(impl):
    _module_check(impl, LibraryAttention, TorchAttention, "CausalSelfAttention (n_head 4, n_embd 16)", _HEADS_HINT)


@pytest.mark.ex4_2
def test_self_attention_other_head_counts(impl):
    for n_head in (1, 2, 8):
        config = CONFIG.replace(n_head=n_head)
        _module_check(impl, LibraryAttention, TorchAttention, f"CausalSelfAttention (n_head {n_head})", _HEADS_HINT,
                      config=config, B=1, T=5)


@pytest.mark.ex4_2
def test_self_attention_is_causal(impl):
    mine, _ = _twins(impl, LibraryAttention, TorchAttention)
    x = _rng(3).standard_normal((1, 6, 16))
    x2 = x.copy()
    x2[:, 3:] += 5.0
    a, b = mine(ml.Tensor(x)).numpy(), mine(ml.Tensor(x2)).numpy()
    assert_close(b[:, :3], a[:, :3], "outputs at positions 0-2 after changing the input at positions 3-5",
                 hint="call F.scaled_dot_product_attention with is_causal=True, on (B, n_head, T, hs) tensors")


@pytest.mark.ex4_3
def test_block_matches_the_mirror(impl):
    _module_check(impl, LibraryBlock, TorchBlock, "Block", "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))")


@pytest.mark.ex4_3
def test_block_without_bias_and_one_head(impl):
    config = CONFIG.replace(bias=False, n_head=1)
    _module_check(impl, LibraryBlock, TorchBlock, "Block (bias=False, n_head 1)",
                  "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))", config=config, B=1, T=4)


@pytest.mark.ex4_3
def test_block_residual_path(impl):
    mine, _ = _twins(impl, LibraryBlock, TorchBlock)
    for name, p in mine.named_parameters():
        if name.endswith("c_proj.weight") or name.endswith("c_proj.bias"):
            p.data[...] = 0.0  # both branches now add exactly zero
    x = _rng(4).standard_normal((2, 5, 16))
    assert_close(mine(ml.Tensor(x)), x, "Block(x) when both branches output zero",
                 hint="each sub-layer adds to the residual stream: x = x + branch(...), and nothing else touches x")


# ------------------------------------------------------------- ex4_4 FLOPs
def _named_numels(model):
    return [(n, p.numel()) for n, p in model.named_parameters()]


@pytest.mark.ex4_4
def test_flops_gpt2_124m(impl):
    config = GPTConfig.from_preset("gpt2-124m")
    with torch.device("meta"):  # shapes only, no memory
        model = TorchGPT(config)
    n = 123_653_376  # nanoGPT: GPT-2 124M has 124.44M parameters, 123.65M without wpe
    expected = 6 * n + 12 * 12 * 12 * 64 * 1024
    got = impl(config, _named_numels(model))
    check(isinstance(got, (int, float)) and got == expected,
          f"GPT-2 124M ({n:,} parameters without wpe): expected {expected:,} FLOPs per token, got {got!r}",
          hint="every parameter but transformer.wpe.* multiplies, forward and backward; the attention scores and "
               "weighted sum add a term in n_layer, n_head, n_embd // n_head and block_size")


@pytest.mark.ex4_4
def test_flops_small_models(impl):
    for fields in (dict(n_layer=2, n_head=4, n_embd=16), dict(n_layer=3, n_head=2, n_embd=8, bias=False)):
        config = GPTConfig(block_size=8, vocab_size=32, **fields)
        ml.manual_seed(0)
        model = GPT(config)
        hs = config.n_embd // config.n_head
        expected = 6 * model.num_params() + 12 * config.n_layer * config.n_head * hs * config.block_size
        assert_equal(impl(config, _named_numels(model)), expected, f"FLOPs per token of {fields}, block_size 8",
                     hint="the position embeddings are a lookup: they cost no FLOPs")


@pytest.mark.ex4_4
def test_flops_scale_with_context(impl):
    base = GPTConfig(block_size=8, vocab_size=32, n_layer=2, n_head=2, n_embd=8)
    ml.manual_seed(0)
    numels = _named_numels(GPT(base))
    longer = base.replace(block_size=16)
    numels_longer = [(n, 16 * 8 if n == "transformer.wpe.weight" else k) for n, k in numels]
    diff = impl(longer, numels_longer) - impl(base, numels)
    assert_equal(diff, 12 * 2 * 2 * 4 * 8, "FLOPs(block_size 16) - FLOPs(block_size 8) for n_layer 2, n_head 2, "
                 "n_embd 8", hint="a longer context adds attention FLOPs (12 L H Q dT); the larger wpe adds none")
