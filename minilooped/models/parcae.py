"""Parcae, a stable looped LM (Prairie et al., arXiv 2604.12946; chapter 8).

NumPy core; the PyTorch mirror minilooped/torch/models/parcae.py reads line by line alike.

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

The injection u = injection(h, e) is one of the three of the authors' code (github
sandyresearch/parcae, parcae_lm/modules/injection.py, their injection_type), picked by
config.parcae_injection:

    "diagonal"  DiagonalInjection   u = A_bar h + B_bar e          rho(A_bar) < 1 by construction
    "add"       AdditiveInjection   u = h + e                      A_bar = I: rho = 1
    "linear"    LinearInjection     u = W [h; e] = W_h h + W_e e   A_bar = W_h: rho unconstrained

"linear" is Huginn's injection (arXiv 2502.05171; github seal-rg/recurrent-pretraining,
recpre/raven_modeling_minimal.py: adapter(cat([x, input_embeds]))); "add" is the plain
additive input injection. Every injection's ``A_bar()`` returns the linear map it applies
to h, a (C,) diagonal or the (C, C) matrix W_h, so the spectral-radius argument can be
measured for all three rather than told.

Initialisation, as the authors' code (parcae_lm/models/parcae/init.py, utils/init.py,
their init_strategy "scaled-zero" with init_orthogonal=True): a = 0, Delta with
exp(-Delta) = sqrt(1/5) ~ 0.447, B = I; C = sqrt(2/5) Q with Q a random orthogonal matrix
(their trunc_orthogonal_: the QR of a truncated normal, at their std sqrt(2 / (5 C))
times sqrt(C)); the linear adapter W a normal of std sqrt(2 / (5 C)) cut at 3 std. a,
dt_bias, B and C take no weight decay (``no_weight_decay``; their optimiser's
``_no_weight_decay`` group); the linear adapter does, as in their AdamW groups. Only the
trunk's own parameters follow their init: the blocks keep GPT-2's (gpt.py).

Training: T ~ max(1, Poisson(n_loops)) (``sample_loops``), drawn per sequence by default
(config.loop_sampling, their recurrent_iteration_method "per-sequence") or once per
batch, then ``model(idx, n_loops=T)`` with T an int or a (B,) array. Only the last
min(T_i, backprop_loops) loops of sequence i carry gradients (truncated backprop); the
first ones run under no_grad. Truncation happens in train mode only. With per-sequence
counts the batch runs as their code does: max_i(T_i - k_i) loops without gradient, in
which sequence i moves for its first T_i - k_i, then max_i(k_i) loops with gradient, in
which it moves for its first k_i (k_i = its gradient loops) and otherwise keeps its
state; sequence i so sees exactly its own T_i loops, the last k_i with gradient, as if
it ran alone. (Their sampler draws from a torch generator seeded by the micro-batch
step and the process rank, afresh for every micro-batch; ours from the training loop's
NumPy generator, once per optimiser step for all its micro-batches and processes, the
same draw in both engines.)

Course's choices: ln_prelude is GPT-2's LayerNorm (theirs is their config's Norm class);
h_0 "normal" is their "like-init": a normal of std 0.02 truncated at 3 std. C and the
linear adapter have no bias whatever config.bias says (theirs follow config.bias, which
is False in every config they ship).

Generation passes h0_seed (generate.py): h_0 is then drawn position by position, position
p from its own NumPy generator default_rng((h0_seed, p)) (``position_noise``), so a
prefix's h_0 does not depend on how long the sequence is. The KV cache draws only the
new positions' (kv_cache.py), the uncached model all of them, and both get the same
numbers; so do the core and the mirror. Training draws (B, T, C) at once from the
framework's RNG, as before.
"""
import math

import numpy as np

import minilooped as ml
import minilooped.nn as nn
import minilooped.functional as F
from minilooped.backend import np


from .trunk import Trunk

H0_STD = 0.02  # std of the "normal" initial state: the embeddings' init std
C_GAIN = math.sqrt(2 / 5)  # their C: gain std sqrt(C) with std = sqrt(2 / (5 C))


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


def trunc_orthogonal_(w, gain):
    """Their trunc_orthogonal_ on a square w: Q of the QR of a normal truncated at +-2,
    each column's sign set by diag(R) (so Q is uniformly distributed), times gain."""
    nn.init.trunc_normal_(w, std=1.0)  # (C, C)
    q, r = np.linalg.qr(w.numpy())
    w.data = (q * np.sign(np.diag(r)) * gain).astype(w.dtype)  # column j times sign(R_jj)
    return w


class DiagonalInjection(nn.Module):
    """Parcae: u = A_bar h + B_bar e, with A_bar = exp(-softplus(dt_bias) exp(a)), B_bar = Delta B."""

    def __init__(self, config):
        super().__init__()
        self.a = nn.Parameter(ml.zeros(config.n_embd))  # A = -exp(a)
        self.dt_bias = nn.Parameter(ml.zeros(config.n_embd))  # Delta = softplus(dt_bias)
        self.B = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def init_weights(self):
        delta = -math.log(math.sqrt(1 / 5))  # exp(-Delta) = sqrt(1/5)
        nn.init.zeros_(self.a)  # A = -1
        nn.init.constant_(self.dt_bias, delta + math.log(-math.expm1(-delta)))  # softplus^-1(Delta)
        nn.init.eye_(self.B.weight)  # B = I

    def no_weight_decay(self):
        return [self.a, self.dt_bias, self.B.weight]

    def A_bar(self):
        """The diagonal of A_bar (C,): exp(Delta A) = exp(-softplus(dt_bias) exp(a))."""
        return (-F.softplus(self.dt_bias) * self.a.exp()).exp()

    def forward(self, h, e):
        delta = F.softplus(self.dt_bias)  # Delta (C,)
        A_bar = (-delta * self.a.exp()).exp()  # (C,)
        return A_bar * h + delta * self.B(e)  # A_bar h + Delta B e: (B, T, C)


class AdditiveInjection(nn.Module):
    """The "add" baseline: u = h + e, i.e. A_bar = I and B_bar = I (no parameters)."""

    def __init__(self, config):
        super().__init__()
        self.n_embd = config.n_embd

    def init_weights(self):
        """No parameters."""

    def no_weight_decay(self):
        return []

    def A_bar(self):
        """The diagonal of A_bar (C,): ones."""
        return ml.ones(self.n_embd)

    def forward(self, h, e):
        return h + e  # (B, T, C)


class LinearInjection(nn.Module):
    """The "linear" baseline: u = W [h; e] = W_h h + W_e e, an adapter on the concatenation."""

    def __init__(self, config):
        super().__init__()
        self.n_embd = config.n_embd
        self.adapter = nn.Linear(2 * config.n_embd, config.n_embd, bias=False)  # W = [W_h | W_e]

    def init_weights(self):
        std = math.sqrt(2 / (5 * self.n_embd))
        nn.init.trunc_normal_(self.adapter.weight, std=std, a=-3 * std, b=3 * std)

    def no_weight_decay(self):
        return []  # their AdamW groups decay the adapter like any weight

    def A_bar(self):
        """A_bar (C, C): W_h, the block of the adapter's weight that multiplies h."""
        return self.adapter.weight[:, :self.n_embd]

    def forward(self, h, e):
        return self.adapter(ml.cat([h, e], dim=-1))  # W [h; e]: (B, T, 2C) -> (B, T, C)


INJECTIONS = {"diagonal": DiagonalInjection, "add": AdditiveInjection, "linear": LinearInjection}


class Parcae(Trunk):
    def __init__(self, config):
        super().__init__(config)
        self.ln_prelude = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.injection = INJECTIONS[config.parcae_injection](config)
        self.C = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def init_weights(self):
        self.injection.init_weights()
        trunc_orthogonal_(self.C.weight, C_GAIN)  # C = sqrt(2/5) Q

    def no_weight_decay(self):
        return self.injection.no_weight_decay() + [self.C.weight]

    def sample_loops(self, rng, batch_size=None):
        """Training loop counts T ~ max(1, Poisson(n_loops)) from a NumPy Generator ``rng``:
        an int (loop_sampling="batch") or an int64 array (batch_size,) (="sequence")."""
        if self.config.loop_sampling == "batch":
            return max(1, int(rng.poisson(self.config.n_loops)))
        if batch_size is None:
            raise ValueError("sample_loops(rng, batch_size): loop_sampling='sequence' draws one "
                             "loop count per sequence; pass the batch size.")
        return np.maximum(1, rng.poisson(self.config.n_loops, size=batch_size)).astype(np.int64)

    def loop_counts(self, n_loops, batch_size):
        """The loops each sequence runs, (batch_size,): n_loops an int, None or a (B,) array."""
        if n_loops is None or np.ndim(n_loops) == 0:
            return np.full(batch_size, self.loop_count(n_loops), dtype=np.int64)
        counts = np.asarray(n_loops)
        if counts.shape != (batch_size,) or not np.issubdtype(counts.dtype, np.integer) \
                or counts.min() < 1:
            raise ValueError(f"n_loops={n_loops!r}: per-sequence loop counts are integers >= 1, "
                             f"one per sequence (shape ({batch_size},)); got shape "
                             f"{counts.shape}, dtype {counts.dtype}.")
        return counts.astype(np.int64)

    def initial_state(self, e, seed=None):
        """h_0 like e (B, T, C): zeros, or a normal of std H0_STD truncated at 3 std,
        drawn position by position if a seed is given (see the docstring)."""
        if self.config.h0 == "zeros":
            return ml.zeros_like(e)
        if seed is not None:
            start = 0 if self.cache is None else self.cache.length  # e's first position
            h = position_noise(seed, start, tuple(e.shape))  # (B, T, C)
            return ml.Tensor(h, dtype=e.dtype).to(e.device)
        h = ml.zeros_like(e).detach()
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

    def step_where(self, h, e, blocks, t, moving):
        """Loop t on the sequences where moving (B,) is True; the others keep their h."""
        new = self.step(h, e, blocks, t)  # (B, T, C)
        if moving.all():
            return new
        return ml.where(ml.Tensor(moving[:, None, None]).to(h.device), new, h)  # (B, T, C)

    def readout(self, h, e, blocks):
        x = self.C(h)  # C h_T: (B, T, C)
        for i in range(self.config.loop_end, self.config.n_layer):  # coda
            x = blocks[i](x)  # (B, T, C)
        return x

    def forward(self, x, blocks, n_loops=None, h0=None, h0_seed=None):
        h, e = self.enter(x, blocks, h0, h0_seed)
        T = self.loop_counts(n_loops, h.shape[0])  # loops per sequence (B,)
        k = np.minimum(T, self.config.backprop_loops) if self.training else T  # with gradients (B,)
        frozen = int((T - k).max())  # loops without gradient
        with ml.no_grad():
            for t in range(frozen):
                h = self.step_where(h, e, blocks, t, t < T - k)
        for t in range(int(k.max())):
            h = self.step_where(h, e, blocks, frozen + t, t < k)
        return [self.readout(h, e, blocks)]
