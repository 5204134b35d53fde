"""Hugging Face GPT-2 -> ours: a GPT2LMHeadModel with random weights (small GPT2Config,
nothing downloaded) gives the same logits as our mirror and our core after conversion."""
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from minilooped.models import GPT, config_from_hf_gpt2, from_hf_gpt2
from minilooped.torch.models import GPT as TorchGPT

torch.set_num_threads(1)  # tiny models: one thread beats an oversubscribed pool


def hf_model(dtype=torch.float64):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_positions=24, n_embd=48, n_layer=3, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(dtype).eval()
    with torch.no_grad():  # HF inits biases and LayerNorms to 0 / 1: make every weight count
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def tokens():
    return np.random.default_rng(0).integers(0, 96, (2, 24))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_hf_logits_match_mirror_and_core(dtype, tol):
    hf = hf_model(dtype)
    idx = tokens()
    with torch.no_grad():
        want = hf(torch.tensor(idx)).logits.numpy()

    config = config_from_hf_gpt2(hf.config)
    sd = from_hf_gpt2(hf.state_dict())  # torch tensors in, NumPy arrays out
    assert all(isinstance(v, np.ndarray) for v in sd.values())

    mirror = TorchGPT(config).to(dtype).eval()
    mirror.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    with torch.no_grad():
        got_mirror = mirror(torch.tensor(idx))[0].numpy()
    np.testing.assert_allclose(got_mirror, want, rtol=tol, atol=tol * np.abs(want).max())

    core = GPT(config).to(str(dtype).replace("torch.", "")).eval()
    core.load_state_dict(sd)
    got_core = core(idx)[0].numpy()
    np.testing.assert_allclose(got_core, want, rtol=tol, atol=tol * np.abs(want).max())


def test_hf_loss_matches():
    """Same next-token loss: HF shifts the labels inside, we take shifted targets.
    (HF computes this loss in float32 even for a float64 model, hence rel=1e-6.)"""
    hf = hf_model()
    idx = tokens()
    core = GPT(config_from_hf_gpt2(hf.config)).to("float64")
    core.load_state_dict(from_hf_gpt2(hf.state_dict()))
    with torch.no_grad():
        want = hf(torch.tensor(idx), labels=torch.tensor(idx)).loss.item()
    targets = np.concatenate([idx[:, 1:], -np.ones((2, 1), dtype=idx.dtype)], axis=1)  # -1: ignored
    assert core(idx, targets)[1].item() == pytest.approx(want, rel=1e-6)


def test_conversion_transposes_conv1d_and_accepts_numpy():
    hf = hf_model()
    sd_hf = hf.state_dict()
    sd = from_hf_gpt2({k: v.numpy() for k, v in sd_hf.items()})  # NumPy in works too
    w = sd_hf["transformer.h.0.attn.c_attn.weight"].numpy()  # Conv1D: (in, out)
    assert w.shape == (48, 144) and sd["transformer.h.0.attn.c_attn.weight"].shape == (144, 48)
    np.testing.assert_array_equal(sd["transformer.h.0.attn.c_attn.weight"], w.T)
    np.testing.assert_array_equal(sd["transformer.h.2.mlp.c_proj.weight"],
                                  sd_hf["transformer.h.2.mlp.c_proj.weight"].numpy().T)
    np.testing.assert_array_equal(sd["transformer.h.1.ln_1.bias"], sd_hf["transformer.h.1.ln_1.bias"].numpy())
    np.testing.assert_array_equal(sd["lm_head.weight"], sd["transformer.wte.weight"])
    # a GPT2Model state dict (no "transformer." prefix, no head) converts as well
    base = {k[len("transformer."):]: v for k, v in sd_hf.items() if k.startswith("transformer.")}
    sd2 = from_hf_gpt2(base)
    assert sd2.keys() == sd.keys()
    # the names are exactly ours
    assert set(sd) == set(TorchGPT(config_from_hf_gpt2(hf.config)).state_dict())


def test_config_from_hf_rejects_other_gelu():
    config = GPT2Config(vocab_size=96, n_positions=24, n_embd=48, n_layer=1, n_head=4,
                        activation_function="relu")
    with pytest.raises(ValueError, match=r"activation_function='relu'.*gelu_new"):
        config_from_hf_gpt2(config)
    c = config_from_hf_gpt2(GPT2Config(vocab_size=96, n_positions=24, n_embd=48, n_layer=2, n_head=4))
    assert (c.vocab_size, c.block_size, c.n_embd, c.n_layer, c.n_head) == (96, 24, 48, 2, 4)
