"""Parcae, a stable looped LM (Prairie et al., arXiv 2604.12946; chapter 8).

PyTorch mirror of the NumPy core's minilooped/models/parcae.py, line by line alike.

Looping as a dynamical system over the residual stream:

    e       = norm(P(x))                          prelude P = h[:n_prelude], then ln_prelude
    h_0     ~ truncated normal (or zeros)
    h_{t+1} = R(A_bar h_t + B_bar e)              R = the recurrent blocks, t = 0 .. T-1
    output  = coda(C h_T), then ln_f and the tied head (gpt.py)

    A = -diag(exp(a)),  Delta = softplus(dt_bias)      (both per channel)
    A_bar = exp(Delta A) = exp(-Delta exp(a))          (zero-order hold: every entry in (0, 1))
    B_bar = Delta B                                    (Euler)

A_bar is diagonal with entries in (0, 1) whatever a and dt_bias are, so its spectral
radius is below 1: the linearised recurrence cannot blow up. (In floating point an entry
rounds to 1 once Delta exp(a) drops below half the dtype's epsilon: in float64 when a and
dt_bias are both below about -18, in float32 below about -8.)

Initialisation (the public Parcae code, parcae_lm/models/parcae/init.py, as stored in
github.com/minchoCoin/parcae): a = 0, Delta with exp(-Delta) = sqrt(1/5) ~ 0.447,
B = I, C = I.

Training: T ~ max(1, Poisson(n_loops)) (``sample_loops``, then ``model(idx, n_loops=T)``)
and only the last min(T, backprop_loops) loops carry gradients (truncated backprop);
the first ones run under no_grad. Truncation happens in train mode only. The authors
sample T per sequence; the course samples one T per batch (their code's "per-batch"
mode), which keeps the batch one tensor.

Course's choices: ln_prelude is GPT-2's LayerNorm (theirs is their config's Norm class);
h_0 "normal" is their "like-init": a normal of std 0.02 truncated at 3 std.

Generation passes h0_seed (generate.py): h_0 is then drawn position by position, position
p from its own NumPy generator default_rng((h0_seed, p)) (``position_noise``), so a
prefix's h_0 does not depend on how long the sequence is. The KV cache draws only the
new positions' (kv_cache.py), the uncached model all of them, and both get the same
numbers; so do the core and the mirror. Training draws (B, T, C) at once from the
framework's RNG, as before.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .trunk import Trunk

H0_STD = 0.02  # std of the "normal" initial state: the embeddings' init std


def position_noise(seed, start, shape):
    """(B, T, C) float64 draws of N(0, H0_STD^2) truncated at 3 std; position start + t
    from its own generator, np.random.default_rng((seed, start + t))."""
    B, T, C = shape
    h = np.empty(shape)
    for t in range(T):
        rng = np.random.default_rng((seed, start + t))
        z = rng.standard_normal((B, C))
        while (out := np.abs(z) > 3).any():  # truncation: redraw what falls outside 3 std
            z[out] = rng.standard_normal(int(out.sum()))
        h[:, t] = H0_STD * z
    return h


class Injection(nn.Module):
    """u = A_bar h + B_bar e, with A_bar = exp(-softplus(dt_bias) exp(a)), B_bar = Delta B."""

    def __init__(self, config):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(config.n_embd))  # A = -exp(a)
        self.dt_bias = nn.Parameter(torch.zeros(config.n_embd))  # Delta = softplus(dt_bias)
        self.B = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def init_weights(self):
        delta = -math.log(math.sqrt(1 / 5))  # exp(-Delta) = sqrt(1/5)
        nn.init.zeros_(self.a)  # A = -1
        nn.init.constant_(self.dt_bias, delta + math.log(-math.expm1(-delta)))  # softplus^-1(Delta)
        nn.init.eye_(self.B.weight)  # B = I

    def A_bar(self):
        """The diagonal of A_bar (C,): exp(Delta A) = exp(-softplus(dt_bias) exp(a))."""
        return (-F.softplus(self.dt_bias) * self.a.exp()).exp()

    def forward(self, h, e):
        delta = F.softplus(self.dt_bias)  # Delta (C,)
        A_bar = (-delta * self.a.exp()).exp()  # (C,)
        return A_bar * h + delta * self.B(e)  # A_bar h + Delta B e: (B, T, C)


class Parcae(Trunk):
    def __init__(self, config):
        super().__init__(config)
        self.ln_prelude = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.injection = Injection(config)
        self.C = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def init_weights(self):
        self.injection.init_weights()
        nn.init.eye_(self.C.weight)  # C = I

    def sample_loops(self, rng):
        """Training loop count T ~ max(1, Poisson(n_loops)) from a NumPy Generator ``rng``."""
        return max(1, int(rng.poisson(self.config.n_loops)))

    def initial_state(self, e, seed=None):
        """h_0 like e (B, T, C): zeros, or a normal of std H0_STD truncated at 3 std,
        drawn position by position if a seed is given (see the docstring)."""
        if self.config.h0 == "zeros":
            return torch.zeros_like(e)
        if seed is not None:
            start = 0 if self.cache is None else self.cache.length  # e's first position
            h = position_noise(seed, start, tuple(e.shape))  # (B, T, C)
            return torch.as_tensor(h, dtype=e.dtype, device=e.device)
        h = torch.zeros_like(e).detach()
        return nn.init.trunc_normal_(h, mean=0.0, std=H0_STD, a=-3 * H0_STD, b=3 * H0_STD)

    def enter(self, x, blocks, h0=None, h0_seed=None):
        """The prelude: (h_0, e) with e = norm(P(x)); h0 replaces the drawn initial state."""
        for i in range(self.config.loop_start):  # prelude P
            x = blocks[i](x)  # (B, T, C)
        e = self.ln_prelude(x)  # e = norm(P(x)): (B, T, C)
        h = self.initial_state(e, h0_seed) if h0 is None else h0  # h_0: (B, T, C)
        return h, e

    def step(self, h, e, blocks, t):
        """Loop t: h <- R(A_bar h + B_bar e)."""
        h = self.injection(h, e)  # (B, T, C)
        for i in range(self.config.loop_start, self.config.loop_end):
            h = blocks[i](h)  # R, the recurrent blocks: (B, T, C)
        self.record(h)
        return h

    def readout(self, h, e, blocks):
        x = self.C(h)  # C h_T: (B, T, C)
        for i in range(self.config.loop_end, self.config.n_layer):  # coda
            x = blocks[i](x)  # (B, T, C)
        return x

    def forward(self, x, blocks, n_loops=None, h0=None, h0_seed=None):
        h, e = self.enter(x, blocks, h0, h0_seed)
        n = self.loop_count(n_loops)
        k = min(n, self.config.backprop_loops) if self.training else n  # loops that carry gradients
        with torch.no_grad():
            for t in range(n - k):
                h = self.step(h, e, blocks, t)
        for t in range(n - k, n):
            h = self.step(h, e, blocks, t)
        return [self.readout(h, e, blocks)]
