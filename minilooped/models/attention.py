"""Causal multi-head self-attention, GPT-2's.

NumPy core; the PyTorch mirror minilooped/torch/models/attention.py reads line by line alike.

Follows nanoGPT's model.py (karpathy/nanoGPT): one fused c_attn projection to q, k, v,
scaled dot-product attention with a causal mask, an output projection c_proj. Weights
are stored (out, in) like every nn.Linear, so GPT-2 checkpoints load after transposing
Hugging Face's Conv1D weights (convert.py).

Two optional inputs serve the looped variants and are None for plain GPT-2:
- ``xq``: attention injection of the Fully Looped Transformer (Fu et al.): the queries
  come from another stream than the keys and values,
  Q = W_q n(h^{k-1}), K = W_k n(x), V = W_v n(x), with W_q, W_k, W_v the three row
  blocks of c_attn's weight.
- ``relax``: the per-depth relaxation of Relaxed Recursive Transformers (recursive.py);
  ``relax.c_attn(x, self.c_attn)`` computes (W + B_l A_l) x + b + db_l.

During generation with a KV cache, ``self.cache`` is the KVCache (kv_cache.py; GPT.forward
sets it): x holds the new positions only, and the keys and values of the earlier ones
come from the cache.
"""
import minilooped.nn as nn
import minilooped.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.cache = None  # a KVCache while GPT.forward runs with one

    def forward(self, x, xq=None, relax=None):
        B, T, C = x.size()  # batch, sequence length, n_embd
        if xq is None:
            qkv = self.c_attn(x) if relax is None else relax.c_attn(x, self.c_attn)  # (B, T, 3C)
            q, k, v = qkv.split(self.n_embd, dim=2)  # 3 x (B, T, C)
        else:  # attention injection: Q = W_q xq, [K, V] = W_kv x
            w, b = self.c_attn.weight, self.c_attn.bias  # (3C, C), (3C,)
            q = F.linear(xq, w[:C], None if b is None else b[:C])  # (B, T, C)
            k, v = F.linear(x, w[C:], None if b is None else b[C:]).split(C, dim=2)  # 2 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        mask = None
        if self.cache is not None:  # the earlier positions' keys and values, then these
            k, v, mask = self.cache.update(self, k, v)  # (B, nh, S, hs) with S >= T; mask: kv_cache.py
        # softmax(q k^T / sqrt(hs) + causal mask) v
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=k.size(2) == T
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        y = self.c_proj(y) if relax is None else relax.c_proj(y, self.c_proj)  # (B, T, C)
        return self.resid_dropout(y)
