"""Relaxed Recursive Transformers (Bae et al., arXiv 2410.20672; chapter 9).

NumPy core; the PyTorch mirror minilooped/torch/models/recursive.py reads line by line alike.

A pretrained N-layer GPT-2 becomes a recursive model: K = n_layer unique blocks looped
R = n_loops times (N = K R), built by ``from_gpt2``.

Sharing: depth d = 0 .. N-1 applies unique block
    CYCLE:    d mod K          (|1..K|1..K|...)
    SEQUENCE: d div R          (each unique block R times in a row)
Initialisation of unique block i from the pretrained layers tied to it:
    Stepwise: layer round(linspace(0, N-1, K))[i]   (round half up)
    Average:  the mean of the tied layers
    Lower:    layer i

Relaxation (lora_rank r > 0): every depth d has its own LoRA on the four weight matrices,

    W_d = W_shared + B_d A_d,   A_d (r, in), B_d (out, r),

initialised by truncated SVD of the residual W_d^orig - W_shared = U S V^T:
A_d = V_r^T, B_d = U_r S_r. With r = n_embd (full rank: min(out, in) of every block
weight) the residual is exact.

Course's choice, LayerNorms and biases: GPT-2 blocks also hold LayerNorm weights and
biases, which LoRA does not touch, so a LoRA-only model cannot reproduce the original.
With relax_vectors=True (the default) every depth also gets an additive delta on each of
these vectors, initialised to (original - shared): cheap (13 n_embd numbers per depth)
and the full-rank model then reproduces the pretrained one exactly. With r = 0 there is
no relaxation at all: the strictly shared model. The paper does not say what the
authors do with norms and biases (Gemma's RMSNorm has no bias).

Early exit: ``model(idx, exit_loop=k)`` (or n_loops=k) stops after loop k, i.e. after
depth k K, and reads out through ln_f and the shared head.
"""
import math

import minilooped as ml
import minilooped.nn as nn
import minilooped.functional as F
from minilooped import backend

from .trunk import Trunk

LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
NORMS = ("ln_1", "ln_2")


class LoRA(nn.Module):
    """The depth's delta on one Linear: y = base(x) + B A x (+ db)."""

    def __init__(self, in_features, out_features, rank, bias):
        super().__init__()
        self.A = nn.Parameter(ml.zeros(rank, in_features))  # (r, in)
        self.B = nn.Parameter(ml.zeros(out_features, rank))  # (out, r)
        self.bias = nn.Parameter(ml.zeros(out_features)) if bias else None  # db (out,)

    def forward(self, x, base):
        y = base(x) + F.linear(F.linear(x, self.A), self.B)  # W x + b + B (A x): (B, T, out)
        return y if self.bias is None else y + self.bias


class NormDelta(nn.Module):
    """The depth's delta on one LayerNorm: LN with weight + dw and bias + db."""

    def __init__(self, n_embd, enabled, bias):
        super().__init__()
        self.weight = nn.Parameter(ml.zeros(n_embd)) if enabled else None  # dw (C,)
        self.bias = nn.Parameter(ml.zeros(n_embd)) if enabled and bias else None  # db (C,)

    def forward(self, x, base):
        if self.weight is None:
            return base(x)
        b = None if base.bias is None else base.bias + self.bias
        return F.layer_norm(x, base.normalized_shape, base.weight + self.weight, b, base.eps)


class AttentionRelaxation(nn.Module):
    def __init__(self, config, vectors):
        super().__init__()
        C, r = config.n_embd, config.lora_rank
        self.c_attn = LoRA(C, 3 * C, r, vectors)
        self.c_proj = LoRA(C, C, r, vectors)


class MLPRelaxation(nn.Module):
    def __init__(self, config, vectors):
        super().__init__()
        C, r = config.n_embd, config.lora_rank
        self.c_fc = LoRA(C, 4 * C, r, vectors)
        self.c_proj = LoRA(4 * C, C, r, vectors)


class Relaxation(nn.Module):
    """All deltas of one depth, under the names of the block they relax."""

    def __init__(self, config):
        super().__init__()
        vectors = config.relax_vectors
        self.ln_1 = NormDelta(config.n_embd, vectors, config.bias)
        self.attn = AttentionRelaxation(config, vectors and config.bias)
        self.ln_2 = NormDelta(config.n_embd, vectors, config.bias)
        self.mlp = MLPRelaxation(config, vectors and config.bias)


def block_order(n_unique, n_loops, sharing):
    """The unique block applied at each depth d = 0 .. K R - 1."""
    if sharing == "cycle":
        return [d % n_unique for d in range(n_unique * n_loops)]
    return [d // n_loops for d in range(n_unique * n_loops)]


class Recursive(Trunk):
    def __init__(self, config):
        super().__init__(config)
        depth = config.n_layer * config.n_loops
        self.relax = nn.ModuleList([Relaxation(config) for _ in range(depth)]) if config.lora_rank else None
        self.order = block_order(config.n_layer, config.n_loops, config.sharing)

    def init_weights(self):
        # standard LoRA init, B = 0: a fresh relaxed model equals the shared one
        if self.relax is not None:
            for name, p in self.relax.named_parameters():
                if name.endswith(".A"):
                    nn.init.normal_(p, mean=0.0, std=0.02)
                else:
                    nn.init.zeros_(p)

    def step(self, h, ctx, blocks, t):
        """Loop t: depths d = t K .. t K + K - 1, each with its own relaxation."""
        for d in range(t * self.config.n_layer, (t + 1) * self.config.n_layer):
            h = blocks[self.order[d]](h, relax=None if self.relax is None else self.relax[d])  # (B, T, C)
        self.record(h)
        return h

    def forward(self, x, blocks, n_loops=None, exit_loop=None):
        c = self.config
        if n_loops is not None and exit_loop is not None and n_loops != exit_loop:
            raise ValueError(f"exit_loop={exit_loop} and n_loops={n_loops} disagree; pass one.")
        n = self.loop_count(exit_loop if exit_loop is not None else n_loops)
        if n > c.n_loops:
            raise ValueError(f"exit_loop={n} is past the last loop: this recursive model has "
                             f"n_loops={c.n_loops} (its depths were relaxed one by one). "
                             f"Use 1 <= exit_loop <= {c.n_loops}.")
        return super().forward(x, blocks, n_loops=n)


def stepwise_sources(n_layer, n_unique):
    """Stepwise init: layer round(linspace(0, N-1, K))[i] for unique block i (round half up)."""
    if n_unique == 1:
        return [0]
    return [math.floor(i * (n_layer - 1) / (n_unique - 1) + 0.5) for i in range(n_unique)]


def shared_init(layers, n_unique, init, sharing="cycle"):
    """The n_unique shared values of one parameter from its N = len(layers) pretrained values
    (e.g. every layer's mlp.c_fc.weight): Stepwise, Lower, or the Average of the layers
    that ``sharing`` ties to each block (module docstring)."""
    N = len(layers)
    if not isinstance(n_unique, int) or n_unique < 1 or N % n_unique:
        raise ValueError(f"n_unique={n_unique!r} must divide the number of layers, {N}.")
    if init == "stepwise":
        return [layers[s] for s in stepwise_sources(N, n_unique)]
    if init == "lower":
        return [layers[i] for i in range(n_unique)]
    if init != "average":
        raise ValueError(f"init={init!r}: use 'stepwise', 'average' or 'lower'.")
    order = block_order(n_unique, N // n_unique, sharing)
    tied = [[d for d in range(N) if order[d] == i] for i in range(n_unique)]  # the depths of block i
    return [sum(layers[d] for d in depths) / len(depths) for depths in tied]  # their mean


def svd_lora_init(residual, rank):
    """(A (r, in), B (out, r)) whose product B A is the best rank-r approximation of the
    residual W_orig - W_shared (out, in): the truncated SVD, A = V_r^T, B = U_r S_r. By
    Eckart-Young no matrix of rank <= r is closer, in the Frobenius or the spectral norm;
    the Frobenius error is sqrt(sum of the squared singular values past the r-th)."""
    if not isinstance(rank, int) or not 0 <= rank <= min(residual.shape):
        raise ValueError(f"rank={rank!r} must be an int in [0, {min(residual.shape)}] for a "
                         f"residual of shape {tuple(residual.shape)}.")
    xp = backend.array_module(residual)  # numpy, or cupy on a GPU
    U, S, Vh = xp.linalg.svd(residual, full_matrices=False)  # U S V^T
    return Vh[:rank], U[:, :rank] * S[:rank]  # V_r^T (r, in), U_r S_r (out, r)


def relaxed_param_count(config):
    """Parameters of a recursive model of ``config``, each counted once (the tied head once,
    the position table included: GPT.num_params(non_embedding=False)): the embeddings, the
    K = n_layer shared blocks, ln_f and, with lora_rank r > 0, the relaxation of each of
    the K R depths (LoRA on the four matrices; with relax_vectors, the norm and bias deltas)."""
    C, r, b = config.n_embd, config.lora_rank, int(config.bias)
    depths = config.n_layer * config.n_loops
    block = 12 * C * C + (2 + 11 * b) * C  # four matrices, two LayerNorms, (five biases)
    shared = (config.vocab_size + config.block_size) * C + config.n_layer * block + (1 + b) * C  # + ln_f
    if r == 0:
        return shared
    lora = r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))  # r (in + out) per matrix
    vectors = (2 + 11 * b) * C if config.relax_vectors else 0  # what LoRA leaves: norms, biases
    return shared + depths * (lora + vectors)


def from_gpt2(model, n_unique, sharing="cycle", init="stepwise", lora_rank=0, relax_vectors=True):
    """A recursive GPT with n_unique shared blocks built from a (trained) gpt2 ``model``."""
    from .gpt import GPT  # gpt.py imports this file for the Recursive trunk

    c = model.config
    if c.variant != "gpt2":
        raise ValueError(f"from_gpt2 needs a variant='gpt2' model, got variant={c.variant!r}.")
    N = c.n_layer
    if not isinstance(n_unique, int) or n_unique < 1 or N % n_unique:
        raise ValueError(f"n_unique={n_unique!r} must divide the source model's n_layer={N} "
                         f"(K unique blocks looped R = N / K times); try one of "
                         f"{[k for k in range(1, N + 1) if N % k == 0]}.")
    config = c.replace(variant="recursive", n_layer=n_unique, n_loops=N // n_unique,
                       sharing=sharing, init=init, lora_rank=lora_rank, relax_vectors=relax_vectors)
    recursive = GPT(config).to(model.lm_head.weight.dtype)  # the source's dtype
    src = {k: v.copy() for k, v in model.state_dict().items()}  # the original
    sd = recursive.state_dict()
    for k in sd:  # embeddings, ln_f, head: copied as they are
        if not k.startswith(("transformer.h.", "transformer.trunk.")):
            sd[k] = src[k]
    order = recursive.transformer.trunk.order
    names = [k[len("transformer.h.0."):] for k in sd if k.startswith("transformer.h.0.")]
    for name in names:  # the shared blocks, parameter by parameter
        layers = [src[f"transformer.h.{d}.{name}"] for d in range(N)]  # the N originals
        for i, w in enumerate(shared_init(layers, n_unique, init, sharing)):
            sd[f"transformer.h.{i}.{name}"] = w
    if lora_rank:  # the relaxation: truncated SVD of each depth's residual
        for d in range(N):
            orig, shared = f"transformer.h.{d}.", f"transformer.h.{order[d]}."
            delta = f"transformer.trunk.relax.{d}."
            for lin in LINEARS:
                residual = src[orig + lin + ".weight"] - sd[shared + lin + ".weight"]  # (out, in)
                A, B = svd_lora_init(residual, lora_rank)  # B A: the best rank-r residual
                sd[delta + lin + ".A"], sd[delta + lin + ".B"] = A, B  # (r, in), (out, r)
                if delta + lin + ".bias" in sd:
                    sd[delta + lin + ".bias"] = src[orig + lin + ".bias"] - sd[shared + lin + ".bias"]
            for ln in NORMS:
                for p in ("weight", "bias"):
                    if f"{delta}{ln}.{p}" in sd:
                        sd[f"{delta}{ln}.{p}"] = src[f"{orig}{ln}.{p}"] - sd[f"{shared}{ln}.{p}"]
    recursive.load_state_dict(sd)
    return recursive
