"""GPT-2's MLP and pre-LN transformer block.

PyTorch mirror of the NumPy core's minilooped/models/block.py, line by line alike.

    Block(x) = x + g(x),   g(x) = a + MLP(LN_2(x + a)) with a = Attn(LN_1(x))

i.e. two residual updates, x <- x + Attn(LN_1 x) then x <- x + MLP(LN_2 x). Every looped
variant is built from this block; ``g`` is what Loop-Residual calls f_theta and SCORE's
"branch" reading calls F. As in nanoGPT's model.py; GELU is GPT-2's tanh approximation
(Hugging Face's "gelu_new"), so converted GPT-2 checkpoints give the same logits.

``xq`` (Fully Looped attention injection) and ``relax`` (Relaxed Recursive per-depth
deltas) are passed through to the attention and MLP; see attention.py.
"""
import torch.nn as nn

from .attention import CausalSelfAttention


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, relax=None):
        x = self.c_fc(x) if relax is None else relax.c_fc(x, self.c_fc)  # (B, T, 4C)
        x = self.gelu(x)  # (B, T, 4C)
        x = self.c_proj(x) if relax is None else relax.c_proj(x, self.c_proj)  # (B, T, C)
        return self.dropout(x)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, xq=None, relax=None):
        if relax is None:
            xq = None if xq is None else self.ln_1(xq)  # queries see the same LayerNorm
            x = x + self.attn(self.ln_1(x), xq)  # (B, T, C)
            x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        else:
            x = x + self.attn(relax.ln_1(x, self.ln_1), relax=relax.attn)  # (B, T, C)
            x = x + self.mlp(relax.ln_2(x, self.ln_2), relax=relax.mlp)  # (B, T, C)
        return x
