"""Core vs mirror parity, in the manner of llm.c's test_gpt2.

For every variant: build the PyTorch mirror with a tiny config, copy its weights into the
NumPy core, then compare logits, loss, every parameter gradient, and the losses of 10
AdamW steps (weight decay on 2-D weights only, as nanoGPT).

Tolerances, stated:
- float64: every array elementwise within rtol = 1e-9, plus atol = 1e-12 times the
  array's largest magnitude (for entries that are zero up to rounding).
- float32: rtol = 1e-4 with atol = 1e-5 times the array's largest magnitude for logits,
  loss and the AdamW losses; gradients rtol = 1e-3, atol = 1e-4 times their largest
  magnitude (summation orders differ between NumPy and PyTorch kernels).
"""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.models import GPT, GPTConfig, from_gpt2
from minilooped.torch.models import GPT as TorchGPT
from minilooped.torch.models import from_gpt2 as torch_from_gpt2

# tiny models: one thread is much faster than a thread pool fighting for 2 busy cores
torch.set_num_threads(1)

TINY = dict(vocab_size=64, n_embd=32, n_head=4, block_size=16, n_layer=3)
VARIANTS = {
    "gpt2": dict(),
    "loop_residual": dict(variant="loop_residual", n_layer=3, n_prelude=1, n_coda=1, n_loops=3),
    "fully_looped": dict(variant="fully_looped", n_layer=2, n_loops=3, loss_loops="all"),
    "fully_looped_LT": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="none"),
    "fully_looped_LTi": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="additive"),
    "fully_looped_LTia": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="attention_first"),
    "fully_looped_FLTres": dict(variant="fully_looped", n_layer=2, n_loops=3, injection="residual",
                                loss_loops="last_third"),
    "contractive_block": dict(variant="contractive", n_layer=2, n_prelude=1, n_loops=3),
    "contractive_branch": dict(variant="contractive", n_layer=1, n_loops=3, score_f="branch", dt=0.5),
    "parcae": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, backprop_loops=2,
                   loop_sampling="batch"),
    # per-sequence loop counts: rows of one batch run different loop counts
    "parcae_per_sequence": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3,
                                backprop_loops=2, loop_sampling="sequence"),
    "parcae_add": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, backprop_loops=2,
                       parcae_injection="add"),
    "parcae_linear": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, backprop_loops=2,
                          parcae_injection="linear"),
    "recursive": "recursive",  # built from a gpt2 model with from_gpt2, LoRA rank 4
}
TOL = {
    "float64": dict(rtol=1e-9, atol=1e-12, grad_rtol=1e-9, grad_atol=1e-12),
    "float32": dict(rtol=1e-4, atol=1e-5, grad_rtol=1e-3, grad_atol=1e-4),
}
MEASURED = {}  # variant/dtype -> max relative error, printed by test_report (pytest -s)


def build_pair(name, dtype):
    """(mirror, core) models with the same weights, in dtype."""
    torch.manual_seed(0)
    spec = VARIANTS[name]
    if spec == "recursive":
        source = TorchGPT(GPTConfig(**{**TINY, "n_layer": 4})).to(getattr(torch, dtype))
        mirror = torch_from_gpt2(source, 2, sharing="cycle", init="average", lora_rank=4)
        # nudge the relaxation off its SVD init so every LoRA factor gets a real gradient
        with torch.no_grad():
            for p in mirror.transformer.trunk.parameters():
                p.add_(0.01 * torch.randn_like(p))
    else:
        mirror = TorchGPT(GPTConfig(**{**TINY, **spec})).to(getattr(torch, dtype))
    core = GPT(mirror.config).to(dtype)
    core.load_state_dict({k: v.detach().cpu().numpy() for k, v in mirror.state_dict().items()})
    return mirror, core


def batch(seed=0, B=3, T=16):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 64, (B, T)), rng.integers(0, 64, (B, T))


def loop_kwargs(mirror, rng):
    """Parcae: sampled training loop counts (an int, or one per sequence) and an explicit
    h_0, the same for both."""
    if mirror.config.variant != "parcae":
        return {}, {}
    T = mirror.sample_loops(rng, 3)
    h0 = 0.02 * rng.standard_normal((3, 16, mirror.config.n_embd))
    dtype = mirror.lm_head.weight.dtype
    return (dict(n_loops=T, h0=torch.tensor(h0, dtype=dtype)),
            dict(n_loops=T, h0=ml.Tensor(h0.astype(str(dtype).replace("torch.", "")))))


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def close(got, want, rtol, atol, what):
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(np.max(np.abs(want)), 1e-300),
                               err_msg=what)
    return rel_err(np.asarray(got), want)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_forward_backward(name, dtype):
    tol = TOL[dtype]
    mirror, core = build_pair(name, dtype)
    idx, targets = batch()
    rng_t, rng_c = np.random.default_rng(5), np.random.default_rng(5)  # per sequence: T = (4, 2, 1)
    kw_t, _ = loop_kwargs(mirror, rng_t)
    _, kw_c = loop_kwargs(mirror, rng_c)

    logits_t, loss_t = mirror(torch.tensor(idx), torch.tensor(targets), **kw_t)
    loss_t.backward()
    logits_c, loss_c = core(idx, targets, **kw_c)
    loss_c.backward()

    worst = close(logits_c.numpy(), logits_t.detach().numpy(), tol["rtol"], tol["atol"], "logits")
    worst = max(worst, close(loss_c.item(), loss_t.item(), tol["rtol"], tol["atol"], "loss"))
    grads_t = {n: p.grad for n, p in mirror.named_parameters()}
    grads_c = {n: p.grad for n, p in core.named_parameters()}
    assert grads_t.keys() == grads_c.keys()
    for n, g in grads_t.items():
        assert g is not None and grads_c[n] is not None, f"no gradient for {n}"
        worst = max(worst, close(grads_c[n], g.numpy(), tol["grad_rtol"], tol["grad_atol"], f"grad {n}"))
    MEASURED[f"{name}/{dtype}"] = worst


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_adamw_steps(name, dtype):
    tol = TOL[dtype]
    mirror, core = build_pair(name, dtype)
    opt_t = torch.optim.AdamW(mirror.optim_groups(0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    opt_c = ml.optim.AdamW(core.optim_groups(0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    rng_t, rng_c = np.random.default_rng(2), np.random.default_rng(2)
    losses_t, losses_c = [], []
    for step in range(10):
        idx, targets = batch()  # one batch, so the losses must go down
        kw_t, _ = loop_kwargs(mirror, rng_t)
        _, kw_c = loop_kwargs(mirror, rng_c)
        _, loss_t = mirror(torch.tensor(idx), torch.tensor(targets), **kw_t)
        opt_t.zero_grad(set_to_none=True)
        loss_t.backward()
        opt_t.step()
        _, loss_c = core(idx, targets, **kw_c)
        opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        opt_c.step()
        losses_t.append(loss_t.item())
        losses_c.append(loss_c.item())
    assert losses_t[-1] < losses_t[0]  # it trains
    # float32 drifts over the steps: the 10-step losses get 10x the one-step tolerance
    scale = 1 if dtype == "float64" else 10
    err = close(np.array(losses_c), np.array(losses_t), scale * tol["rtol"], scale * tol["atol"], "losses")
    MEASURED[f"{name}/{dtype}/adamw"] = err


def test_parity_generate_same_tokens():
    mirror, core = build_pair("loop_residual", "float64")
    idx, _ = batch(B=2, T=4)
    out_t = mirror.generate(torch.tensor(idx), 20, temperature=0.8, top_k=10, seed=3)
    out_c = core.generate(idx, 20, temperature=0.8, top_k=10, seed=3)
    np.testing.assert_array_equal(out_c, out_t.numpy())


def test_parity_recursive_builder():
    """from_gpt2 gives the same recursive model from the same gpt2 weights in both."""
    torch.manual_seed(0)
    source_t = TorchGPT(GPTConfig(**{**TINY, "n_layer": 4})).double()
    source_c = GPT(source_t.config).to("float64")
    source_c.load_state_dict({k: v.numpy() for k, v in source_t.state_dict().items()})
    for sharing, init in [("cycle", "stepwise"), ("sequence", "average"), ("cycle", "lower")]:
        rec_t = torch_from_gpt2(source_t, 2, sharing=sharing, init=init, lora_rank=3)
        rec_c = from_gpt2(source_c, 2, sharing=sharing, init=init, lora_rank=3)
        sd_t, sd_c = rec_t.state_dict(), rec_c.state_dict()
        assert sd_t.keys() == sd_c.keys()
        for k in ("transformer.h.1.attn.c_attn.weight", "transformer.h.0.ln_2.bias"):
            np.testing.assert_allclose(sd_c[k], sd_t[k].numpy(), rtol=1e-12, atol=1e-15)
        idx, _ = batch()
        np.testing.assert_allclose(rec_c(idx)[0].numpy(), rec_t(torch.tensor(idx))[0].detach().numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_report():
    """Prints the measured errors (run with -s); always passes."""
    for k, v in sorted(MEASURED.items()):
        print(f"parity {k}: max relative error {v:.2e}")
