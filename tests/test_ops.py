"""Every op of the core against finite differences and against torch.autograd.

OP_SPECS holds, for each op registered in minilooped.ops.OPS, a hypothesis strategy that
draws a case: float64 input arrays of random (often broadcasting) shapes, the op applied
in the core, and the same computation in PyTorch. Three tests run on every op:

- test_gradcheck:        backward() equals central finite differences (float64)
- test_matches_torch:    values and gradients equal torch.autograd's (float64)
- test_float32_stays_float32: float32 in gives float32 out and float32 gradients

test_every_op_is_covered fails when an op is registered without an entry here.
The op tests also run on CuPy when a GPU is present (device "cuda", marked gpu).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings, assume, strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minilooped as ml
import minilooped.functional as F
from minilooped import backend
from minilooped.ops import OPS
from minilooped.ops.elementwise import cast
from minilooped.ops.shape import to_device
from minilooped.testing import assert_close, gradcheck

# Finite differences: central, in float64. The truncation error is O(EPS^2) ~ 1e-12 and
# the rounding error about 1e-16 |L| / EPS ~ 1e-10 |L|, far inside these tolerances.
FD_EPS = 1e-6
FD_RTOL = 1e-5
FD_ATOL = 1e-7
# Agreement with PyTorch in float64: the same formulas summed in a different order
# differ by a few ulp (~1e-15 relative); 1e-10 leaves room for cancellation.
TORCH_RTOL = 1e-10
TORCH_ATOL = 1e-12

FD_EXAMPLES = 15
TORCH_EXAMPLES = 20
F32_EXAMPLES = 5

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not ml.cuda_available(), reason="needs CuPy and a GPU")]),
]



# ------------------------------------------------------------------ cases
@dataclass
class Case:
    """One drawn example: ``core(dev, *tensors)`` and ``ref(*torch_tensors)`` compute the same.

    ``dev(array)`` moves a NumPy constant (mask, ids) to the device under test.
    """
    inputs: list                      # float64 NumPy arrays, the differentiable inputs
    core: Callable
    ref: Callable
    desc: str = ""
    fd: bool = True                   # False: no finite differences (e.g. casts to float32)
    torch_rtol: float = TORCH_RTOL
    torch_atol: float = TORCH_ATOL

    def __repr__(self) -> str:
        return f"Case({self.desc}; shapes {[a.shape for a in self.inputs]})"


@dataclass
class Spec:
    cases: st.SearchStrategy
    fd_cases: st.SearchStrategy | None = None   # default: ``cases``


def _rng(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _arr(x, shape):
    return np.asarray(x, dtype=np.float64).reshape(shape)


def normal(rng, shape, scale=1.0):
    return _arr(rng.standard_normal(shape) * scale, shape)


def away_from_zero(rng, shape, lo=0.2, hi=2.0):
    """Values with |x| in [lo, hi]: for abs and relu, whose derivative jumps at 0."""
    return _arr(rng.choice([-1.0, 1.0], size=shape) * rng.uniform(lo, hi, size=shape), shape)


def positive(rng, shape, lo=0.5, hi=2.0):
    return _arr(rng.uniform(lo, hi, size=shape), shape)


def distinct(rng, shape):
    """All values different by >= 0.05, so max has no ties (its gradient jumps at a tie)."""
    n = int(np.prod(shape, dtype=np.int64))
    vals = (rng.permutation(n) + rng.uniform(0.0, 0.5, size=n)) * 0.1 - 0.05 * n
    return _arr(vals, shape)


small_shapes = array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)
pair_shapes = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=5)
triple_shapes = mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=4)


def _dims(draw, ndim):
    """None, an int (possibly negative) or a tuple of distinct dims."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    picked = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(d - ndim if draw(st.booleans()) else d for d in picked)


def _torch_dims(dim, ndim):
    return tuple(range(ndim)) if dim is None else dim


# ----------------------------------------------------------- elementwise
def _binary(name, core_op, ref_op, make_b=normal):
    """a op b with broadcasting, or with a Python number on either side (the r-operators)."""
    @st.composite
    def cases(draw):
        rng = _rng(draw)
        (sa, sb), _ = draw(pair_shapes)
        a, b = normal(rng, sa), make_b(rng, sb)
        kind = draw(st.sampled_from(["tensor", "scalar_right", "scalar_left"]))
        if kind == "tensor":
            return Case([a, b], lambda dev, x, y: core_op(x, y), ref_op, f"{name} {sa} {sb}")
        c = float(make_b(rng, ()))
        if kind == "scalar_right":
            return Case([a], lambda dev, x: core_op(x, c), lambda x: ref_op(x, c), f"{name} {sa} and {c}")
        a = make_b(rng, sa)  # the tensor is now on the right: keep it in b's domain
        return Case([a], lambda dev, x: core_op(c, x), lambda x: ref_op(c, x), f"{name} {c} and {sa}")
    return Spec(cases())


def _unary(name, core_op, ref_op, make=normal):
    @st.composite
    def cases(draw):
        rng = _rng(draw)
        shape = draw(array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5))
        return Case([make(rng, shape)], lambda dev, x: core_op(x), ref_op, f"{name} {shape}")
    return Spec(cases())


@st.composite
def pow_cases(draw):
    rng = _rng(draw)
    if draw(st.booleans()):  # scalar exponent, positive base (a^p for p not an integer)
        shape = draw(small_shapes)
        p = draw(st.sampled_from([2, 3, 0.5, -1.5, 1.7, 0]))
        return Case([positive(rng, shape)], lambda dev, x: x ** p, lambda x: x ** p, f"pow {shape} ** {p}")
    (sa, sb), _ = draw(pair_shapes)
    if draw(st.booleans()):  # tensor exponent: d/db a^b = a^b log a needs a > 0
        return Case([positive(rng, sa), normal(rng, sb)], lambda dev, x, y: x ** y, lambda x, y: x ** y,
                    f"pow {sa} ** {sb}")
    c = float(positive(rng, ()))  # Python number ** tensor (__rpow__)
    return Case([normal(rng, sb)], lambda dev, y: c ** y, lambda y: c ** y, f"pow {c} ** {sb}")


@st.composite
def softplus_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    beta = draw(st.sampled_from([1.0, 2.0, 0.5]))
    threshold = draw(st.sampled_from([20.0, 1.0]))
    x = normal(rng, shape, 2.0)
    # above the threshold softplus is linear (as torch): the function jumps there
    assume(np.all(np.abs(x * beta - threshold) > 1e-3))
    return Case([x], lambda dev, t: F.softplus(t, beta=beta, threshold=threshold),
                lambda t: TF.softplus(t, beta=beta, threshold=threshold), f"softplus beta={beta} thr={threshold}")


@st.composite
def cast_cases(draw):
    """float64 -> float32 -> float64 equals torch's rounding exactly (no finite differences:
    float32 steps of ~1e-7 make the function a staircase at eps = 1e-6)."""
    rng = _rng(draw)
    shape = draw(small_shapes)
    how = draw(st.sampled_from(["to", "float", "cast"]))
    if how == "to":
        core = lambda dev, x: x.to("float32").to(ml.float64)  # noqa: E731
    elif how == "float":
        core = lambda dev, x: x.float().double()  # noqa: E731
    else:
        core = lambda dev, x: cast(cast(x, ml.float32), ml.float64)  # noqa: E731
    return Case([normal(rng, shape)], core, lambda x: x.float().double(), f"cast via {how}", fd=False)


@st.composite
def cast_fd_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    return Case([normal(rng, shape)], lambda dev, x: cast(x, ml.float64) * 1.5, lambda x: x * 1.5, "cast f64")


@st.composite
def where_cases(draw):
    rng = _rng(draw)
    (sc, sa, sb), _ = draw(triple_shapes)
    cond = rng.random(sc) < 0.5
    kind = draw(st.sampled_from(["tensors", "scalar_a", "scalar_b", "tensor_cond"]))
    tc = torch.from_numpy(np.asarray(cond))
    a, b = normal(rng, sa), normal(rng, sb)
    if kind == "scalar_a":
        return Case([b], lambda dev, y: ml.where(dev(cond), 0.5, y), lambda y: torch.where(tc, 0.5, y),
                    f"where {sc} 0.5 {sb}")
    if kind == "scalar_b":
        return Case([a], lambda dev, x: ml.where(dev(cond), x, -2.0), lambda x: torch.where(tc, x, -2.0),
                    f"where {sc} {sa} -2")
    if kind == "tensor_cond":
        return Case([a, b], lambda dev, x, y: ml.where(ml.Tensor(dev(cond)), x, y),
                    lambda x, y: torch.where(tc, x, y), f"where Tensor{sc} {sa} {sb}")
    return Case([a, b], lambda dev, x, y: ml.where(dev(cond), x, y), lambda x, y: torch.where(tc, x, y),
                f"where {sc} {sa} {sb}")


@st.composite
def masked_fill_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    # the mask broadcasts to the tensor: drop some leading dims, set others to 1
    k = draw(st.integers(0, len(shape)))
    mshape = tuple(1 if draw(st.booleans()) else s for s in shape[k:])
    mask = rng.random(mshape) < 0.4
    value = draw(st.sampled_from([0.0, -1e4, 3.5]))
    tm = torch.from_numpy(np.asarray(mask))
    return Case([normal(rng, shape)], lambda dev, x: x.masked_fill(dev(mask), value),
                lambda x: x.masked_fill(tm, value), f"masked_fill mask {mshape} value {value}")


# ------------------------------------------------------------- reductions
def _reduction(name):
    @st.composite
    def cases(draw):
        rng = _rng(draw)
        shape = draw(small_shapes)
        dim = _dims(draw, len(shape))
        keepdim = draw(st.booleans())
        td = _torch_dims(dim, len(shape))
        desc = f"{name} {shape} dim={dim} keepdim={keepdim}"
        if name == "sum":
            return Case([normal(rng, shape)], lambda dev, x: x.sum(dim, keepdim=keepdim),
                        lambda x: x.sum(dim=td, keepdim=keepdim), desc)
        if name == "mean":
            return Case([normal(rng, shape)], lambda dev, x: x.mean(dim, keepdim=keepdim),
                        lambda x: x.mean(dim=td, keepdim=keepdim), desc)
        if name == "max":
            return Case([distinct(rng, shape)], lambda dev, x: x.max(dim, keepdim=keepdim),
                        lambda x: torch.amax(x, dim=td, keepdim=keepdim), desc)
        unbiased = draw(st.booleans())
        axes = range(len(shape)) if dim is None else [d % len(shape) for d in ((dim,) if isinstance(dim, int) else dim)]
        n = int(np.prod([shape[d] for d in axes]))
        assume(n > int(unbiased))  # N - correction must be positive (see test_var_of_one_element)
        return Case([normal(rng, shape)], lambda dev, x: x.var(dim, keepdim=keepdim, unbiased=unbiased),
                    lambda x: torch.var(x, dim=dim, correction=int(unbiased), keepdim=keepdim),
                    desc + f" unbiased={unbiased}")
    return Spec(cases())


# ------------------------------------------------------------------ shape
@st.composite
def reshape_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    n = int(np.prod(shape))
    options = [(n,), (-1,), tuple(reversed(shape)), shape + (1,), (1,) + shape, (n, 1)]
    if len(shape) >= 2:
        options.append((shape[0], -1))
        options.append((-1, shape[-1]))
    target = draw(st.sampled_from(options))
    how = draw(st.sampled_from(["reshape", "view", "args"]))
    if how == "reshape":
        core = lambda dev, x: x.reshape(target)  # noqa: E731
    elif how == "view":
        core = lambda dev, x: x.view(*target)  # noqa: E731
    else:
        core = lambda dev, x: x.reshape(*target)  # noqa: E731
    return Case([normal(rng, shape)], core, lambda x: x.reshape(target), f"{how} {shape} -> {target}")


@st.composite
def transpose_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    nd = len(shape)
    d0, d1 = draw(st.integers(-nd, nd - 1)), draw(st.integers(-nd, nd - 1))
    return Case([normal(rng, shape)], lambda dev, x: x.transpose(d0, d1), lambda x: x.transpose(d0, d1),
                f"transpose {shape} {d0} {d1}")


@st.composite
def permute_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    perm = tuple(draw(st.permutations(range(len(shape)))))
    if draw(st.booleans()):
        core = lambda dev, x: x.permute(*perm)  # noqa: E731
    else:
        core = lambda dev, x: x.permute(perm)  # noqa: E731
    return Case([normal(rng, shape)], core, lambda x: x.permute(*perm), f"permute {shape} {perm}")


def _basic_item(draw, size):
    kind = draw(st.sampled_from(["int", "slice", "slice", "full"]))
    if kind == "int":
        return draw(st.integers(-size, size - 1))
    if kind == "full":
        return slice(None)
    start = draw(st.one_of(st.none(), st.integers(-size, size)))
    stop = draw(st.one_of(st.none(), st.integers(-size, size)))
    step = draw(st.one_of(st.none(), st.integers(1, 3)))  # torch has no negative steps
    return slice(start, stop, step)


@st.composite
def getitem_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    x = normal(rng, shape)
    kind = draw(st.sampled_from(["basic", "basic", "array", "arrays", "mixed", "bool", "tensor", "list"]))
    nd = len(shape)
    if kind == "basic":
        k = draw(st.integers(1, nd))
        if k < nd and draw(st.booleans()):   # ..., then items for the last k dims
            items = [Ellipsis] + [_basic_item(draw, s) for s in shape[nd - k:]]
        else:                                # items for the first k dims
            items = [_basic_item(draw, s) for s in shape[:k]]
        if draw(st.booleans()):
            items.insert(draw(st.integers(0, len(items))), None)
        index = tuple(items) if len(items) > 1 or draw(st.booleans()) else items[0]
        return Case([x], lambda dev, t: t[index], lambda t: t[index], f"getitem {shape}[{index}]")
    if kind in ("array", "tensor", "list"):
        # advanced indexing of dim 0 with repeated (and negative) ids: gradients must add up
        ids = rng.integers(-shape[0], shape[0], size=draw(st.integers(1, 6)))
        ids = np.concatenate([ids, ids[:1]])  # at least one repeat
        ti = torch.from_numpy(ids)
        if kind == "tensor":
            return Case([x], lambda dev, t: t[ml.Tensor(dev(ids))], lambda t: t[ti], f"getitem {shape}[Tensor {ids}]")
        if kind == "list":
            lst = [int(i) for i in ids]
            return Case([x], lambda dev, t: t[lst], lambda t: t[lst], f"getitem {shape}[{lst}]")
        return Case([x], lambda dev, t: t[dev(ids)], lambda t: t[ti], f"getitem {shape}[{ids}]")
    if kind == "arrays" and nd >= 2:
        # two broadcasting index arrays: pairs (i, j), some repeated
        m = draw(st.integers(1, 5))
        i = rng.integers(0, shape[0], size=(m, 1))
        j = rng.integers(0, shape[1], size=(1, draw(st.integers(1, 3))))
        ti, tj = torch.from_numpy(i), torch.from_numpy(j)
        return Case([x], lambda dev, t: t[dev(i), dev(j)], lambda t: t[ti, tj],
                    f"getitem {shape}[i{i.shape}, j{j.shape}]")
    if kind == "mixed" and nd >= 2:
        ids = rng.integers(0, shape[1], size=draw(st.integers(1, 5)))
        ti = torch.from_numpy(ids)
        sl = _basic_item(draw, shape[0])
        if isinstance(sl, int):
            sl = slice(None)
        return Case([x], lambda dev, t: t[sl, dev(ids)], lambda t: t[sl, ti], f"getitem {shape}[{sl}, {ids}]")
    mask = rng.random(shape) < 0.5
    tm = torch.from_numpy(mask)
    return Case([x], lambda dev, t: t[dev(mask)], lambda t: t[tm], f"getitem {shape}[bool mask]")


@st.composite
def cat_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    nd = len(shape)
    dim = draw(st.integers(-nd, nd - 1))
    k = draw(st.integers(1, 4))
    shapes = []
    for _ in range(k):
        s = list(shape)
        s[dim] = draw(st.integers(1, 4))
        shapes.append(tuple(s))
    return Case([normal(rng, s) for s in shapes], lambda dev, *ts: ml.cat(list(ts), dim),
                lambda *ts: torch.cat(ts, dim), f"cat {shapes} dim={dim}")


@st.composite
def stack_cases(draw):
    rng = _rng(draw)
    shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5))
    nd = len(shape)
    dim = draw(st.integers(-nd - 1, nd))
    k = draw(st.integers(1, 3))
    return Case([normal(rng, shape) for _ in range(k)], lambda dev, *ts: ml.stack(ts, dim=dim),
                lambda *ts: torch.stack(ts, dim), f"stack {k} x {shape} dim={dim}")


@st.composite
def split_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    nd = len(shape)
    dim = draw(st.integers(-nd, nd - 1))
    n = shape[dim]
    if draw(st.booleans()):
        arg = draw(st.integers(1, n + 1))
    else:
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        arg = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    how = draw(st.sampled_from(["method", "function"]))
    if how == "method":
        core = lambda dev, x: x.split(arg, dim)  # noqa: E731
    else:
        core = lambda dev, x: ml.split(x, arg, dim=dim)  # noqa: E731
    return Case([normal(rng, shape)], core, lambda x: torch.split(x, arg, dim), f"split {shape} {arg} dim={dim}")


@st.composite
def to_device_cases(draw):
    rng = _rng(draw)
    shape = draw(small_shapes)
    # to('cpu') is the identity on the CPU; on a GPU it copies to the host and the
    # gradient must come back to the device
    core = (lambda dev, x: to_device(x, "cpu") * 2.0) if draw(st.booleans()) else (lambda dev, x: x.cpu() * 2.0)
    return Case([normal(rng, shape)], core, lambda x: x * 2.0, f"to_device {shape}")


# ----------------------------------------------------------------- linalg
@st.composite
def matmul_cases(draw):
    rng = _rng(draw)
    (ba, bb), _ = draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    sa, sb = tuple(ba) + (m, k), tuple(bb) + (k, n)
    how = draw(st.sampled_from(["@", "matmul"]))
    core = (lambda dev, x, y: x @ y) if how == "@" else (lambda dev, x, y: F.matmul(x, y))
    return Case([normal(rng, sa), normal(rng, sb)], core, lambda x, y: x @ y, f"matmul {sa} {sb}")


@st.composite
def linear_cases(draw):
    rng = _rng(draw)
    lead = draw(array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    n_in, n_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    x, w = normal(rng, tuple(lead) + (n_in,)), normal(rng, (n_out, n_in))
    if draw(st.booleans()):
        return Case([x, w, normal(rng, (n_out,))], lambda dev, a, b, c: F.linear(a, b, c),
                    lambda a, b, c: TF.linear(a, b, c), f"linear x{x.shape} w{w.shape} bias")
    return Case([x, w], lambda dev, a, b: F.linear(a, b), lambda a, b: TF.linear(a, b), f"linear x{x.shape} w{w.shape}")


# --------------------------------------------------------------------- nn
def _softmax_like(name, core_fn, ref_fn):
    @st.composite
    def cases(draw):
        rng = _rng(draw)
        shape = draw(small_shapes)
        dim = draw(st.integers(-len(shape), len(shape) - 1))
        return Case([normal(rng, shape, 2.0)], lambda dev, x: core_fn(x, dim), lambda x: ref_fn(x, dim),
                    f"{name} {shape} dim={dim}")
    return Spec(cases())


@st.composite
def cross_entropy_cases(draw):
    rng = _rng(draw)
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    ignore_index = draw(st.sampled_from([-100, -1, 0]))
    targets = rng.integers(0, c, size=n)
    ignored = rng.random(n) < 0.3
    targets[ignored] = ignore_index
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if reduction == "mean":
        assume(np.any(targets != ignore_index))  # all ignored: nan, see test_errors/test_autograd
    tt = torch.from_numpy(targets)
    as_tensor = draw(st.booleans())

    def core(dev, x):
        tgt = ml.Tensor(dev(targets)) if as_tensor else dev(targets)
        return F.cross_entropy(x, tgt, ignore_index=ignore_index, reduction=reduction)
    return Case([normal(rng, (n, c), 2.0)], core,
                lambda x: TF.cross_entropy(x, tt, ignore_index=ignore_index, reduction=reduction),
                f"cross_entropy ({n}, {c}) targets {targets} ignore={ignore_index} {reduction}")


def _norm_shape(draw):
    shape = draw(small_shapes)
    k = draw(st.integers(1, min(2, len(shape))))
    return shape, tuple(shape[len(shape) - k:])


@st.composite
def layer_norm_cases(draw):
    rng = _rng(draw)
    shape, ns = _norm_shape(draw)
    eps = draw(st.sampled_from([1e-5, 1e-2]))
    affine = draw(st.sampled_from(["none", "weight", "both"]))
    ns_arg = ns[0] if len(ns) == 1 and draw(st.booleans()) else ns
    x = normal(rng, shape, 2.0) + 0.5
    if affine == "none":
        return Case([x], lambda dev, a: F.layer_norm(a, ns_arg, eps=eps),
                    lambda a: TF.layer_norm(a, ns, eps=eps), f"layer_norm {shape} {ns}")
    w = normal(rng, ns)
    if affine == "weight":
        return Case([x, w], lambda dev, a, b: F.layer_norm(a, ns_arg, b, eps=eps),
                    lambda a, b: TF.layer_norm(a, ns, b, eps=eps), f"layer_norm {shape} {ns} weight")
    return Case([x, w, normal(rng, ns)], lambda dev, a, b, c: F.layer_norm(a, ns_arg, b, c, eps=eps),
                lambda a, b, c: TF.layer_norm(a, ns, b, c, eps=eps), f"layer_norm {shape} {ns} weight+bias")


@st.composite
def rms_norm_cases(draw):
    rng = _rng(draw)
    shape, ns = _norm_shape(draw)
    eps = draw(st.sampled_from([None, 1e-6, 1e-2]))
    x = normal(rng, shape, 2.0)
    if draw(st.booleans()):
        return Case([x], lambda dev, a: F.rms_norm(a, ns, eps=eps), lambda a: TF.rms_norm(a, ns, eps=eps),
                    f"rms_norm {shape} {ns} eps={eps}")
    return Case([x, normal(rng, ns)], lambda dev, a, b: F.rms_norm(a, ns, b, eps=eps),
                lambda a, b: TF.rms_norm(a, ns, b, eps=eps), f"rms_norm {shape} {ns} weight eps={eps}")


@st.composite
def embedding_cases(draw):
    rng = _rng(draw)
    v, d = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    ishape = draw(array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    ids = rng.integers(0, v, size=ishape)
    ids.flat[0] = ids.flat[-1]  # a repeated id (when there are two): its row sums both gradients
    ti = torch.from_numpy(ids)
    as_tensor = draw(st.booleans())
    return Case([normal(rng, (v, d))],
                lambda dev, w: F.embedding(ml.Tensor(dev(ids)) if as_tensor else dev(ids), w),
                lambda w: TF.embedding(ti, w), f"embedding ({v}, {d}) ids {ids.tolist()}")


@st.composite
def dropout_cases(draw):
    """Identity cases against torch (p=0, eval); in training, the mask is the one the core's
    seeded generator makes, and the reference multiplies by that same mask: so the output and
    the gradient must both be x (or g) times the mask scaling. Statistics: test_dropout_*."""
    rng = _rng(draw)
    shape = draw(small_shapes)
    x = normal(rng, shape)
    kind = draw(st.sampled_from(["p0", "eval", "train", "module"]))
    if kind == "p0":
        return Case([x], lambda dev, t: F.dropout(t, 0.0, training=True) * 1.0,
                    lambda t: TF.dropout(t, 0.0, training=True) * 1.0, "dropout p=0")
    if kind == "eval":
        p = draw(st.sampled_from([0.1, 0.5, 1.0]))
        return Case([x], lambda dev, t: F.dropout(t, p, training=False) * 1.0,
                    lambda t: TF.dropout(t, p, training=False) * 1.0, f"dropout p={p} eval")
    p = draw(st.sampled_from([0.25, 0.5, 0.9, 1.0]))
    layer = ml.nn.Dropout(p) if kind == "module" else (lambda t: F.dropout(t, p))
    seen = {}

    def core(dev, t):
        # the mask the seeded generator of t's device makes, applied to ones, then the op
        # itself under the same seed: the reference multiplies by that mask
        ml.manual_seed(0)
        seen["mask"] = F.dropout(ml.ones(t.shape, dtype=t.dtype, device=t.device), p).numpy()
        ml.manual_seed(0)
        return layer(t)
    return Case([x], core, lambda t: t * torch.from_numpy(seen["mask"].astype(np.float64)), f"{kind} p={p} training")


@st.composite
def sdpa_cases(draw):
    rng = _rng(draw)
    (bq, bk, bv), _ = draw(mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=2, max_side=3))
    L, S, E, Ev = (draw(st.integers(1, 4)) for _ in range(4))
    q, k, v = normal(rng, bq + (L, E)), normal(rng, bk + (S, E)), normal(rng, bv + (S, Ev))
    scale = draw(st.sampled_from([None, 0.3, 1.0]))
    mask_kind = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    desc = f"sdpa q{q.shape} k{k.shape} v{v.shape} scale={scale} {mask_kind}"
    if mask_kind in ("none", "causal"):
        causal = mask_kind == "causal"
        return Case([q, k, v],
                    lambda dev, a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal, scale=scale),
                    lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, is_causal=causal, scale=scale), desc)
    nd = len(bq) + 2
    # a mask may not have more dims than q (torch adds it in place to a tensor of q's rank)
    mshape = draw(st.sampled_from([s for s in [(L, S), (1, S), (1, L, S), (1, 1, S)] if len(s) <= nd]))
    if mask_kind == "bool":
        mask = rng.random(mshape) < 0.6
        mask[..., 0] = True  # no fully masked row: its softmax would be 0/0
    else:
        mask = normal(rng, mshape)
    tm = torch.from_numpy(mask)
    return Case([q, k, v],
                lambda dev, a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=dev(mask), scale=scale),
                lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=tm, scale=scale),
                desc + f" mask{mshape}")


def _gelu_spec():
    @st.composite
    def cases(draw):
        rng = _rng(draw)
        shape = draw(small_shapes)
        how = draw(st.sampled_from(["F", "module"]))
        core = (lambda dev, x: F.gelu(x, approximate="tanh")) if how == "F" else (lambda dev, x: ml.nn.GELU()(x))
        return Case([normal(rng, shape, 2.0)], core, lambda x: TF.gelu(x, approximate="tanh"), f"gelu {shape} {how}")
    return Spec(cases())


OP_SPECS: dict[str, Spec] = {
    "add": _binary("add", lambda a, b: a + b, lambda a, b: a + b),
    "sub": _binary("sub", lambda a, b: a - b, lambda a, b: a - b),
    "mul": _binary("mul", lambda a, b: a * b, lambda a, b: a * b),
    "div": _binary("div", lambda a, b: a / b, lambda a, b: a / b, make_b=away_from_zero),
    "pow": Spec(pow_cases()),
    "neg": _unary("neg", lambda x: -x, lambda x: -x),
    "exp": _unary("exp", lambda x: x.exp(), torch.exp),
    "log": _unary("log", lambda x: x.log(), torch.log, make=positive),
    "tanh": _unary("tanh", F.tanh, torch.tanh),
    "sqrt": _unary("sqrt", lambda x: x.sqrt(), torch.sqrt, make=positive),
    "relu": _unary("relu", F.relu, torch.relu, make=away_from_zero),
    "sigmoid": _unary("sigmoid", lambda x: x.sigmoid(), torch.sigmoid, make=lambda r, s: normal(r, s, 4.0)),
    "abs": _unary("abs", lambda x: x.abs(), torch.abs, make=away_from_zero),
    "softplus": Spec(softplus_cases()),
    "gelu": _gelu_spec(),
    "cast": Spec(cast_cases(), fd_cases=cast_fd_cases()),
    "where": Spec(where_cases()),
    "masked_fill": Spec(masked_fill_cases()),
    "sum": _reduction("sum"),
    "mean": _reduction("mean"),
    "max": _reduction("max"),
    "var": _reduction("var"),
    "reshape": Spec(reshape_cases()),
    "transpose": Spec(transpose_cases()),
    "permute": Spec(permute_cases()),
    "getitem": Spec(getitem_cases()),
    "cat": Spec(cat_cases()),
    "stack": Spec(stack_cases()),
    "split": Spec(split_cases()),
    "to_device": Spec(to_device_cases()),
    "matmul": Spec(matmul_cases()),
    "linear": Spec(linear_cases()),
    "softmax": _softmax_like("softmax", F.softmax, TF.softmax),
    "log_softmax": _softmax_like("log_softmax", F.log_softmax, TF.log_softmax),
    "cross_entropy": Spec(cross_entropy_cases()),
    "layer_norm": Spec(layer_norm_cases()),
    "rms_norm": Spec(rms_norm_cases()),
    "embedding": Spec(embedding_cases()),
    "dropout": Spec(dropout_cases()),
    "scaled_dot_product_attention": Spec(sdpa_cases()),
}
OP_NAMES = sorted(OP_SPECS)


def test_every_op_is_covered():
    missing = sorted(set(OPS) - set(OP_SPECS))
    stale = sorted(set(OP_SPECS) - set(OPS))
    assert not missing, f"ops without gradient check and torch comparison: add them to OP_SPECS: {missing}"
    assert not stale, f"OP_SPECS has entries for ops that are not registered: {stale}"


# --------------------------------------------------------------- running
def _mover(device):
    return lambda a: backend.to_device(np.asarray(a), device)


def _leaves(case, device, dtype=np.float64):
    return [ml.Tensor(backend.to_device(a.astype(dtype), device), requires_grad=True) for a in case.inputs]


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _weights(shapes, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def run_core(case, device, dtype=np.float64):
    """Outputs and gradients of sum_k sum(out_k * w_k), as NumPy arrays."""
    xs = _leaves(case, device, dtype)
    ml.manual_seed(0)
    outs = _as_tuple(case.core(_mover(device), *xs))
    ws = _weights([o.shape for o in outs])
    live = [(o, w) for o, w in zip(outs, ws) if o.requires_grad]
    for i, (o, w) in enumerate(live):
        o.backward(backend.to_device(w.astype(o.dtype), o.device), retain_graph=i < len(live) - 1)
    return outs, xs


def run_torch(case):
    xs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in case.inputs]
    outs = _as_tuple(case.ref(*xs))
    ws = _weights([tuple(o.shape) for o in outs])
    live = [(o, torch.from_numpy(w)) for o, w in zip(outs, ws) if o.requires_grad]
    if live:
        torch.autograd.backward([o for o, _ in live], [w for _, w in live])
    return outs, xs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_gradcheck(name, device):
    spec = OP_SPECS[name]

    @settings(max_examples=FD_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=spec.fd_cases if spec.fd_cases is not None else spec.cases)
    def check(case):
        assume(case.fd)
        mover = _mover(device)
        inputs = [ml.Tensor(backend.to_device(a, device), requires_grad=True) for a in case.inputs]
        gradcheck(lambda *xs: case.core(mover, *xs), inputs, eps=FD_EPS, rtol=FD_RTOL, atol=FD_ATOL, seed=0)
    check()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_matches_torch(name, device):
    spec = OP_SPECS[name]

    @settings(max_examples=TORCH_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=spec.cases)
    def check(case):
        outs, xs = run_core(case, device)
        touts, txs = run_torch(case)
        assert len(outs) == len(touts), f"{case}: {len(outs)} outputs, torch gives {len(touts)}"
        for i, (o, t) in enumerate(zip(outs, touts)):
            assert o.dtype == ml.float64, f"{case}: output {i} is {o.dtype}"
            assert_close(o.numpy(), t.detach().numpy(), case.torch_rtol, case.torch_atol, what=f"{case} output {i}")
        for i, (x, t) in enumerate(zip(xs, txs)):
            tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            g = np.zeros(x.shape) if x.grad is None else backend.to_numpy(x.grad)
            assert g.shape == tuple(x.shape), f"{case}: grad of input {i} has shape {g.shape}, input {tuple(x.shape)}"
            assert_close(g, tg, case.torch_rtol, case.torch_atol, what=f"{case} grad of input {i}")
    check()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_float32_stays_float32(name, device):
    """No silent upcast: float32 in, float32 out and float32 gradients (speed and memory)."""
    spec = OP_SPECS[name]

    @settings(max_examples=F32_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=spec.cases)
    def check(case):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # float32 rounding of extreme cases
            outs, xs = run_core(case, device, dtype=np.float32)
        if name == "cast":
            return  # casts to float32 and back to float64 on purpose
        for i, o in enumerate(outs):
            assert o.dtype == ml.float32, f"{case}: output {i} is {o.dtype}, not float32"
        for i, x in enumerate(xs):
            assert x.grad is None or x.grad.dtype == ml.float32, f"{case}: grad of input {i} is {x.grad.dtype}"
    check()


# ------------------------------------------------------- op-specific extras
def test_cast_to_float32_and_back_gradient_dtypes():
    x = ml.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)        # float64
    y = x.float()
    assert y.dtype == ml.float32
    (y * y).sum().backward()
    assert x.grad.dtype == ml.float64
    np.testing.assert_allclose(x.grad, 2 * np.arange(6.0).reshape(2, 3))


def test_dropout_training_statistics():
    ml.manual_seed(123)
    p = 0.3
    x = ml.ones(200, 500, requires_grad=True)
    y = F.dropout(x, p, training=True)
    kept = y.data != 0
    # about p of the elements are zeroed (binomial, 100k draws: sd ~ 0.0015)
    assert abs(1.0 - kept.mean() - p) < 0.01
    # the survivors are scaled by 1/(1-p), so the mean is preserved
    np.testing.assert_allclose(y.data[kept], 1.0 / (1.0 - p), rtol=1e-6)
    assert abs(float(y.data.mean()) - 1.0) < 0.02
    # the gradient is the same mask times the same scaling
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * y.data, rtol=1e-6)


def test_dropout_is_reproducible_with_manual_seed_and_varies_without():
    x = ml.ones(50, 50)
    ml.manual_seed(5)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    ml.manual_seed(5)
    c = F.dropout(x, 0.5).numpy()
    assert np.array_equal(a, c)
    assert not np.array_equal(a, b)


def test_dropout_p1_zeroes_everything_and_eval_is_identity():
    x = ml.randn(4, 5, requires_grad=True)
    y = F.dropout(x, 1.0)
    assert np.all(y.data == 0)
    y.sum().backward()
    assert np.all(x.grad == 0)
    assert F.dropout(x, 0.5, training=False) is x


def test_sdpa_matches_unfused_attention():
    """The fused op equals softmax(q k^T / sqrt(E) + causal mask) v written with the other ops."""
    rng = np.random.default_rng(0)
    q, k, v = (ml.Tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True) for _ in range(3))
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    att = (q @ k.transpose(-2, -1)) * (1.0 / 2.0)
    att = att.masked_fill(np.triu(np.ones((5, 5), dtype=bool), 1), float("-inf"))
    plain = F.softmax(att, -1) @ v
    assert_close(fused.numpy(), plain.numpy(), 1e-12, 1e-14, what="attention output")


def test_sdpa_dropout_gradcheck_with_fixed_seed():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 4)) for _ in range(3))
    gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=0.4), [q, k, v],
              eps=FD_EPS, rtol=FD_RTOL, atol=FD_ATOL, seed=3)


def test_max_shares_gradient_between_ties_like_torch_amax():
    x = ml.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.max(1).sum().backward()
    t = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], requires_grad=True)
    torch.amax(t, 1).sum().backward()
    np.testing.assert_allclose(x.grad, t.grad.numpy())


def test_var_of_one_element_is_nan_like_torch():
    x = ml.Tensor(np.array([1.5]), requires_grad=True)
    with np.errstate(all="ignore"):
        y = x.var()
        y.backward()
    assert np.isnan(y.item()) and np.isnan(x.grad).all()


def test_chunk_matches_torch():
    x = ml.Tensor(np.arange(14.0).reshape(7, 2))
    t = torch.arange(14.0).reshape(7, 2)
    for got, want in zip(x.chunk(3, 0), torch.chunk(t, 3, 0)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_unsqueeze_squeeze_flatten_round_trip():
    x = ml.Tensor(np.random.default_rng(0).standard_normal((3, 1, 4)), requires_grad=True)
    y = x.squeeze(1).unsqueeze(0).unsqueeze(-1)
    assert y.shape == (1, 3, 4, 1)
    assert x.squeeze().shape == (3, 4) and x.flatten().shape == (12,)
    y.sum().backward()
    assert x.grad.shape == (3, 1, 4)


def test_comparisons_give_boolean_arrays_without_graph():
    x = ml.Tensor([1.0, -2.0, 3.0], requires_grad=True)
    m = x > 0
    assert m.dtype == bool and m.tolist() == [True, False, True]


def test_pow_at_zero_base_matches_torch():
    """0^0 and d/db 0^b: torch defines these gradients as 0 where the naive formulas give nan."""
    a = np.array([0.0, 0.0, 2.0, 0.5])
    b = np.array([0.0, 2.0, 1.5, 0.0])
    x, y = ml.Tensor(a, requires_grad=True), ml.Tensor(b, requires_grad=True)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    with np.errstate(all="ignore"):
        ((x ** y).sum() + (x ** 0).sum()).backward()
    ((tx ** ty).sum() + (tx ** 0).sum()).backward()
    assert_close(x.grad, tx.grad.numpy(), 1e-12, 0, what="d/da")
    assert_close(y.grad, ty.grad.numpy(), 1e-12, 0, what="d/db")


@pytest.mark.parametrize("index", [
    (slice(None, None, -1),), (Ellipsis, slice(None, None, -2)), (None, slice(1, None), [0, 0, 2]),
    (1, Ellipsis, None), ([[0, 1], [1, 1]], slice(None), 2), (np.array([True, False, True]),),
], ids=["reverse", "ellipsis-step-2", "none-slice-repeats", "int-ellipsis-none", "2d-ids", "bool-rows"])
def test_getitem_numpy_only_indexes_gradcheck(index):
    """Indexes torch cannot express (negative steps) or that mix kinds: finite differences only."""
    x = np.random.default_rng(0).standard_normal((3, 4, 3))
    gradcheck(lambda t: t[index], [x], eps=FD_EPS, rtol=FD_RTOL, atol=FD_ATOL)


def test_ops_on_non_contiguous_inputs_match_torch():
    """Transposed views go into BLAS, reshape and the fused backwards: same results as torch."""
    rng = np.random.default_rng(0)
    x_np, w_np = rng.standard_normal((5, 2, 4)), rng.standard_normal((3, 5))
    x, w = ml.Tensor(x_np, requires_grad=True), ml.Tensor(w_np, requires_grad=True)
    tx, tw = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)

    def both(a, b, F_, targets):
        h = a.transpose(0, 2)                                    # (4, 2, 5), not contiguous
        y = F_.linear(h, b)                                      # (4, 2, 3)
        q = y.permute(1, 0, 2)                                   # (2, 4, 3)
        att = F_.scaled_dot_product_attention(q, q, q, is_causal=True)
        ln = F_.layer_norm(att.transpose(-1, -2), (4,))          # (2, 3, 4)
        return F_.log_softmax(ln, dim=0).sum() + F_.cross_entropy(y[:, 0, :], targets)

    targets = np.array([0, 2, 1, 1])
    out = both(x, w, F, targets)
    tout = both(tx, tw, TF, torch.from_numpy(targets))
    out.backward()
    tout.backward()
    assert_close(out.item(), tout.item(), TORCH_RTOL, TORCH_ATOL, what="loss")
    assert_close(x.grad, tx.grad.numpy(), TORCH_RTOL, TORCH_ATOL, what="grad x")
    assert_close(w.grad, tw.grad.numpy(), TORCH_RTOL, TORCH_ATOL, what="grad w")
