"""Hugging Face GPT-2 -> minilooped: state dicts and configs.

Hugging Face's GPT2LMHeadModel uses the parameter names of OpenAI's checkpoints, the
same as ours (nanoGPT's), but stores the four projection matrices of every block
(attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) as ``Conv1D`` weights of shape
(in, out): they are transposed into the (out, in) of nn.Linear. The same rule as
nanoGPT's GPT.from_pretrained. The causal-mask buffers some transformers versions keep
(``attn.bias``, ``attn.masked_bias``) are dropped.

Works on plain dicts of arrays, so it serves both implementations: the values may be
NumPy arrays or torch tensors (read through ``.detach().cpu().numpy()``, duck typed:
this file never imports torch). The result is a dict of NumPy arrays, for the core's
``load_state_dict``, or ``torch.from_numpy`` for the mirror's.
"""
from .config import GPTConfig

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
DROPPED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not parameters


def _array(v):
    """A NumPy array from a NumPy array or a torch tensor (duck typed)."""
    return v.detach().cpu().numpy() if hasattr(v, "detach") else v


def from_hf_gpt2(hf_state_dict):
    """A GPT2LMHeadModel state dict -> our GPT state dict (dict of NumPy arrays)."""
    sd = {}
    for k, v in hf_state_dict.items():
        if k.endswith(DROPPED):
            continue
        key = k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k  # GPT2Model
        w = _array(v)
        sd[key] = w.T.copy() if key.endswith(TRANSPOSED) else w.copy()  # Conv1D (in, out) -> (out, in)
    if "lm_head.weight" not in sd:  # tied: the head is the token embedding
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def config_from_hf_gpt2(hf_config, **overrides):
    """A GPTConfig for a transformers GPT2Config (or its to_dict()).

    Only what our GPT-2 can express is read; GELU must be GPT-2's tanh approximation
    and the LayerNorm epsilon 1e-5, as in every OpenAI checkpoint."""
    c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function={act!r}: our blocks use GPT-2's tanh GELU "
                         "('gelu_new'); a model trained with another GELU would not match.")
    eps = c.get("layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        raise ValueError(f"layer_norm_epsilon={eps}: our LayerNorms use 1e-5 like GPT-2.")
    return GPTConfig(**{
        "block_size": c["n_positions"],
        "vocab_size": c["vocab_size"],
        "n_layer": c["n_layer"],
        "n_head": c["n_head"],
        "n_embd": c["n_embd"],
        "bias": True,
        **overrides,
    })
