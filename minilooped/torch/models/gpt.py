"""GPT: GPT-2 and the looped family in one class.

PyTorch mirror of the NumPy core's minilooped/models/gpt.py, line by line alike.

    x      = drop(wte[idx] + wpe[:T])             token + learned position embeddings
    states = trunk(x, h)                          how the blocks h are applied: the variant
    logits = lm_head(ln_f(states[-1]))            head tied to wte (GPT-2; Press & Wolf 2017)
    loss   = mean over states s of cross_entropy(lm_head(ln_f(s)), targets)

After nanoGPT's model.py (karpathy/nanoGPT): the same parameter names as GPT-2
checkpoints (transformer.wte, transformer.wpe, transformer.h.N.{ln_1, attn.c_attn,
attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, transformer.ln_f, lm_head), Linear weights
stored (out, in), and its init and parameter count. ``transformer.trunk`` holds only
the parameters a variant adds. Differences from nanoGPT: logits are returned for every
position (nanoGPT returns only the last one at inference), GELU is GPT-2's tanh
approximation, and the trunk is pluggable.

Generation with a KV cache (kv_cache.py, generate.py): ``model(idx, cache=cache)`` runs
idx as the positions after the ones the cache holds, so their position embeddings are
wpe[start : start + T] with start = cache.length, and returns the last position's logits.
"""
import math
from contextlib import contextmanager

import torch.nn as nn
import torch.nn.functional as F

from .block import Block
from .contractive import Contractive
from .fully_looped import FullyLooped
from .generate import generate
from .loop_residual import LoopResidual
from .parcae import Parcae
from .recursive import Recursive
from .trunk import Trunk


class Stack(Trunk):
    """GPT-2: every block once, x <- Block_l(x) for l = 1 .. n_layer.

    Each block counts as a "loop" of depth 1: ``step(h, ctx, blocks, t)`` applies block
    t, and the trace records the state after every block, which is what a logit-lens
    plot of the plain model needs."""

    def step(self, h, ctx, blocks, t):
        h = blocks[t](h)  # (B, T, C)
        self.record(h)
        return h

    def forward(self, x, blocks, n_loops=None):
        if n_loops not in (None, 1):
            raise ValueError(f"n_loops={n_loops!r}: a variant='gpt2' model applies each block "
                             "once; only looped variants take n_loops.")
        for t in range(len(blocks)):
            x = self.step(x, None, blocks, t)  # (B, T, C)
        return [x]


TRUNKS = {
    "gpt2": Stack,
    "loop_residual": LoopResidual,
    "fully_looped": FullyLooped,
    "contractive": Contractive,
    "parcae": Parcae,
    "recursive": Recursive,
}


class Transformer(nn.Module):
    """nanoGPT's ``transformer`` ModuleDict, as a class: wte, wpe, drop, h, trunk, ln_f."""

    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.trunk = TRUNKS[config.variant](config)
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output head is the token embedding (one matrix, counted once)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * depth), so the variance the
        # residual stream accumulates does not grow with depth. For looped models the
        # depth is the number of block applications, config.effective_depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.effective_depth))
        self.transformer.trunk.init_weights()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameters, counted as nanoGPT does: the tied head once, and without the
        position embeddings unless non_embedding=False."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, n_loops=None, cache=None, **loop_kwargs):
        """idx (B, T) token ids -> (logits (B, T, vocab), loss or None).

        n_loops changes the loop count (Parcae: an int, or one count per sequence, an
        integer array (B,), as GPT.sample_loops draws them); loop_kwargs go to the trunk
        (parcae: h0=, h0_seed=; recursive: exit_loop=). Targets equal to -1 are ignored.
        cache: a KVCache (kv_cache.py) for generation: idx are the positions after the
        cache.length it holds, which it then holds too, and only the last position's
        logits are returned, (B, 1, vocab)."""
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # positions before idx
        if start + T > self.config.block_size:
            held = f" after the cache's {start}" if start else ""
            raise ValueError(f"idx has T={T} tokens{held} but block_size={self.config.block_size}; "
                             "crop it to the last block_size tokens.")
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe.weight[start:start + T]  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        with self.caching(cache, T):
            states = self.transformer.trunk(x, self.transformer.h, n_loops=n_loops, **loop_kwargs)
        if targets is None:
            x = states[-1] if cache is None else states[-1][:, -1:]  # generation reads the last only
            logits = self.lm_head(self.transformer.ln_f(x))  # (B, T or 1, vocab)
            return logits, None
        losses = []
        for x in states:
            logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
            losses.append(F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T),
                                          ignore_index=-1))
        loss = losses[0] if len(losses) == 1 else sum(losses) / len(losses)
        return logits, loss

    @contextmanager
    def caching(self, cache, T):
        """While a forward pass over T new positions runs with a KV cache, the trunk and
        every attention layer hold it (kv_cache.py); without one, nothing changes."""
        if cache is None:
            yield
            return
        holders = [self.transformer.trunk] + [block.attn for block in self.transformer.h]
        cache.begin(T)
        for m in holders:
            m.cache = cache
        try:
            yield
        finally:
            for m in holders:
                m.cache = None
        cache.end(T)

    @contextmanager
    def trace_loops(self):
        """``with model.trace_loops() as states: model(idx)`` collects the hidden state
        (B, T, C) after every loop (every block for gpt2) as NumPy arrays."""
        states = []
        self.transformer.trunk.trace = states
        try:
            yield states
        finally:
            self.transformer.trunk.trace = None

    def sample_loops(self, rng, batch_size=None):
        """Parcae: training loop counts T ~ max(1, Poisson(n_loops)) from NumPy Generator rng,
        an int (loop_sampling="batch") or one per sequence, an array (batch_size,)."""
        if self.config.variant != "parcae":
            raise ValueError(f"sample_loops is Parcae's training schedule; this model is "
                             f"variant={self.config.variant!r}.")
        return self.transformer.trunk.sample_loops(rng, batch_size)

    def optim_groups(self, weight_decay):
        """AdamW parameter groups, as nanoGPT: weight decay on 2-D weights only, and not on
        those the trunk exempts (Parcae's B and C, as the authors' optimiser groups)."""
        params = [p for p in self.parameters() if p.requires_grad]
        exempt = {id(p) for p in self.transformer.trunk.no_weight_decay()}
        decays = [p.dim() >= 2 and id(p) not in exempt for p in params]
        return [
            {"params": [p for p, d in zip(params, decays) if d], "weight_decay": weight_decay},
            {"params": [p for p, d in zip(params, decays) if not d], "weight_decay": 0.0},
        ]

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None,
                 use_cache=True, cache_mode="exact", **forward_kwargs):
        """Append max_new_tokens sampled tokens to idx (B, T); see generate.py."""
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                        use_cache=use_cache, cache_mode=cache_mode, **forward_kwargs)
