"""The KV cache (models/kv_cache.py): generation with it equals generation without it.

For every variant, in the core and in the mirror: greedy generation with the cache gives
the same tokens as without it, and at every step the last position's logits of the
cached model (the new token alone) agree with those of the whole sequence recomputed.
The cached path differs only in the shapes of its products (one query row instead of T),
so the two agree up to rounding.

Tolerances, stated: float64 logits within atol = 1e-10 times their largest magnitude
(rtol 0); float32 within atol = 1e-4 times their largest magnitude.
"""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.models import GPT, GPTConfig, from_gpt2
from minilooped.models.kv_cache import KVCache
from minilooped.torch.models import GPT as TorchGPT
from minilooped.torch.models import from_gpt2 as torch_from_gpt2
from minilooped.torch.models.kv_cache import KVCache as TorchKVCache

torch.set_num_threads(1)  # tiny models

TINY = dict(vocab_size=64, n_embd=32, n_head=4, block_size=16, n_layer=3)
VARIANTS = {
    "gpt2": dict(),
    "loop_residual": dict(variant="loop_residual", n_layer=3, n_prelude=1, n_coda=1, n_loops=3),
    "fully_looped": dict(variant="fully_looped", n_layer=2, n_loops=3),
    "fully_looped_LT": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="none"),
    "fully_looped_LTi": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="additive"),
    "fully_looped_LTia": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="attention_first"),
    "fully_looped_FLTres": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="residual"),
    "contractive_block": dict(variant="contractive", n_layer=3, n_prelude=1, n_coda=1, n_loops=3),
    "contractive_branch": dict(variant="contractive", n_layer=1, n_loops=3, score_f="branch", dt=0.5),
    "parcae": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3),
    "parcae_zeros": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, h0="zeros"),
    "parcae_add": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, h0="zeros",
                       parcae_injection="add"),
    "parcae_linear": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, h0="zeros",
                          parcae_injection="linear"),
    "recursive": "recursive",  # from_gpt2 of a 4-layer gpt2: 2 shared blocks, LoRA rank 4
}
TOL = {"float64": 1e-10, "float32": 1e-4}
TOKENS = 30  # new tokens: a 4-token prompt grows past block_size=16


def build_pair(name, dtype="float64"):
    """(mirror, core) with the same weights."""
    torch.manual_seed(0)
    spec = VARIANTS[name]
    if spec == "recursive":
        source = TorchGPT(GPTConfig(**{**TINY, "n_layer": 4})).to(getattr(torch, dtype))
        mirror = torch_from_gpt2(source, 2, sharing="cycle", init="average", lora_rank=4)
        with torch.no_grad():  # off the SVD init, so that every LoRA factor matters
            for p in mirror.transformer.trunk.parameters():
                p.add_(0.05 * torch.randn_like(p))
    else:
        mirror = TorchGPT(GPTConfig(**{**TINY, **spec})).to(getattr(torch, dtype))
    with torch.no_grad():  # sharper attention than at init, where it is nearly uniform and
        for name_, p in mirror.named_parameters():  # queries (and so loops) barely matter
            if name_.endswith("c_attn.weight"):
                p.mul_(10)
    core = GPT(mirror.config).to(dtype)
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    return mirror.eval(), core.eval()


def prompt(B=2, T=4, seed=0):
    return np.random.default_rng(seed).integers(0, 64, (B, T))


def as_input(model, idx):
    return torch.tensor(idx) if isinstance(model, TorchGPT) else idx


def logits_np(logits):
    return logits.detach().numpy() if hasattr(logits, "detach") else logits.numpy()


def grad_off(model):
    return torch.no_grad() if isinstance(model, TorchGPT) else ml.no_grad()


def step_logits(model, idx, n_new, cache_mode="exact", **kw):
    """Greedy decoding, cached and recomputed side by side within block_size: the tokens
    of the cached run and both runs' last-position logits (n_new, B, vocab)."""
    Cache = TorchKVCache if isinstance(model, TorchGPT) else KVCache
    cache = Cache(model.config.block_size, cache_mode)
    cached, full = [], []
    with grad_off(model):
        lc, _ = model(as_input(model, idx), cache=cache, **kw)
        for _ in range(n_new):
            lf, _ = model(as_input(model, idx), **kw)
            cached.append(logits_np(lc)[:, -1])
            full.append(logits_np(lf)[:, -1])
            nxt = cached[-1].argmax(-1)[:, None]
            idx = np.concatenate([idx, nxt], axis=1)
            if idx.shape[1] >= model.config.block_size:
                break
            lc, _ = model(as_input(model, nxt), cache=cache, **kw)
    return idx, np.array(cached), np.array(full)


def close(a, b, tol):
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max())


@pytest.mark.parametrize("impl", ["core", "torch"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_greedy_equals_uncached(name, impl):
    mirror, core = build_pair(name)
    model = core if impl == "core" else mirror
    idx = as_input(model, prompt())
    # the same seed: Parcae's random h_0 is drawn from it (per position, so the cache can agree)
    a = np.asarray(model.generate(idx, TOKENS, temperature=0, seed=0))
    b = np.asarray(model.generate(idx, TOKENS, temperature=0, seed=0, use_cache=False))
    np.testing.assert_array_equal(a, b)
    # the logits, step by step (within block_size: past it both recompute)
    kw = {"h0_seed": 5} if name == "parcae" else {}
    _, cached, full = step_logits(model, prompt(), 12, **kw)
    close(cached, full, TOL["float64"])


@pytest.mark.parametrize("impl", ["core", "torch"])
@pytest.mark.parametrize("name", ["gpt2", "fully_looped", "parcae", "recursive"])
def test_cached_float32(name, impl):
    mirror, core = build_pair(name, "float32")
    model = core if impl == "core" else mirror
    kw = {"h0_seed": 5} if name == "parcae" else {}
    _, cached, full = step_logits(model, prompt(), 12, **kw)
    close(cached, full, TOL["float32"])
    np.testing.assert_array_equal(cached.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_core_and_mirror_cached_generation_agree(name):
    mirror, core = build_pair(name)
    idx = prompt()
    out_t = mirror.generate(torch.tensor(idx), TOKENS, temperature=0.8, top_k=10, seed=3)
    out_c = core.generate(idx, TOKENS, temperature=0.8, top_k=10, seed=3)
    np.testing.assert_array_equal(out_c, out_t.numpy())


@pytest.mark.parametrize("impl", ["core", "torch"])
def test_loop_count_at_generation_time(impl):
    """n_loops (and the recursive model's exit_loop) given to generate go through the cache."""
    for name, kw in [("loop_residual", dict(n_loops=5)), ("fully_looped", dict(n_loops=1)),
                     ("parcae", dict(n_loops=6)), ("recursive", dict(exit_loop=1))]:
        mirror, core = build_pair(name)
        model = core if impl == "core" else mirror
        idx = as_input(model, prompt())
        a = np.asarray(model.generate(idx, 14, temperature=0, **kw))
        b = np.asarray(model.generate(idx, 14, temperature=0, use_cache=False, **kw))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", ["core", "torch"])
def test_chunks_after_the_cache(impl):
    """T > 1 new positions after cached ones: the causal mask aligned to the last key."""
    mirror, core = build_pair("fully_looped")
    model = core if impl == "core" else mirror
    Cache = TorchKVCache if impl == "torch" else KVCache
    idx = prompt(T=12)
    cache = Cache(16)
    with grad_off(model):
        model(as_input(model, idx[:, :5]), cache=cache)
        last, _ = model(as_input(model, idx[:, 5:]), cache=cache)  # 7 positions after 5
        full, _ = model(as_input(model, idx))
    close(logits_np(last)[:, -1], logits_np(full)[:, -1], TOL["float64"])


@pytest.mark.parametrize("impl", ["core", "torch"])
def test_last_loop_cache_is_an_approximation(impl):
    """mode="last_loop": exact for the prompt and for one loop, not for several."""
    mirror, core = build_pair("fully_looped")
    model = core if impl == "core" else mirror
    idx = prompt(T=4)
    _, cached, full = step_logits(model, idx, 8, cache_mode="last_loop")
    close(cached[0], full[0], TOL["float64"])  # the prompt's logits: computed whole
    assert np.abs(cached[1:] - full[1:]).max() > 1e-9  # decoded tokens drift (rounding: 1e-16)
    _, cached, full = step_logits(model, idx, 8, cache_mode="last_loop", n_loops=1)
    close(cached, full, TOL["float64"])


@pytest.mark.parametrize("impl", ["core", "torch"])
def test_cache_errors(impl):
    mirror, core = build_pair("loop_residual")
    model = core if impl == "core" else mirror
    Cache = TorchKVCache if impl == "torch" else KVCache
    with pytest.raises(ValueError, match="mode"):
        Cache(16, "first_loop")
    cache = Cache(16)
    with grad_off(model):
        model(as_input(model, prompt(T=10)), cache=cache)
        with pytest.raises(ValueError, match="n_loops"):
            model(as_input(model, prompt(T=1)), cache=cache, n_loops=2)
        cache = Cache(16)
        model(as_input(model, prompt(T=10)), cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            model(as_input(model, prompt(T=7)), cache=cache)
        with pytest.raises(ValueError, match="do not fit"):
            small = Cache(8)
            model(as_input(model, prompt(T=9)), cache=small)


def test_parcae_h0_per_position():
    """A prefix's h_0 does not depend on the sequence length; core and mirror draw the same."""
    mirror, core = build_pair("parcae")
    e = np.zeros((2, 10, TINY["n_embd"]))
    h_c = core.transformer.trunk.initial_state(ml.Tensor(e), seed=9).numpy()
    h_t = mirror.transformer.trunk.initial_state(torch.tensor(e), seed=9).numpy()
    np.testing.assert_array_equal(h_c, h_t)
    short = core.transformer.trunk.initial_state(ml.Tensor(e[:, :4]), seed=9).numpy()
    np.testing.assert_array_equal(short, h_c[:, :4])
    assert np.abs(h_c).max() <= 0.06 and 0.01 < h_c.std() < 0.03  # N(0, 0.02) cut at 3 std
