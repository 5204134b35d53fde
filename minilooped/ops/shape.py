"""Ops that move values around without changing them: reshape, transpose, indexing,
concatenation. Their backward moves the gradient back to where each value came from.
Forward results are views wherever NumPy allows, so no data is copied."""
from __future__ import annotations

from .. import backend
from ..tensor import SliceGrad, Tensor
from .registry import register
from ._util import normalize_dim


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


@register("reshape")
def reshape(a: Tensor, *shape) -> Tensor:
    shape = _shape_arg(shape)
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ValueError(
            f"reshape: cannot reshape a tensor of shape {tuple(a.shape)} ({a.data.size} elements) "
            f"into {shape}; the sizes must multiply to the same number of elements"
        ) from None

    def backward(g):
        return (g.reshape(a.shape),)
    return Tensor._make(out, (a,), backward, "reshape")


@register("transpose")
def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    d0 = normalize_dim(dim0, a.ndim, "transpose")
    d1 = normalize_dim(dim1, a.ndim, "transpose")
    out = a.data.swapaxes(d0, d1)

    def backward(g):  # swapping twice restores the order
        return (g.swapaxes(d0, d1),)
    return Tensor._make(out, (a,), backward, "transpose")


@register("permute")
def permute(a: Tensor, *dims) -> Tensor:
    dims = tuple(normalize_dim(d, a.ndim, "permute") for d in _shape_arg(dims))
    if sorted(dims) != list(range(a.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {a.ndim} dimensions of a tensor of "
                         f"shape {tuple(a.shape)}; name each dim 0..{a.ndim - 1} exactly once")
    out = a.data.transpose(dims)
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d] = i

    def backward(g):
        return (g.transpose(inverse),)
    return Tensor._make(out, (a,), backward, "permute")


def _is_basic(index) -> bool:
    """Basic indexing (ints, slices, None, Ellipsis) never selects an element twice."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


@register("getitem")
def getitem(a: Tensor, index) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    try:
        out = a.data[index]
    except IndexError as exc:
        raise IndexError(f"indexing a tensor of shape {tuple(a.shape)}: {exc}") from None
    basic = _is_basic(index)

    def backward(g):
        if basic:  # zero outside the slice: the engine adds g into its buffer there
            return (SliceGrad(a.shape, index, g),)
        xp = backend.array_module(a.data)
        ga = xp.zeros(a.shape, dtype=g.dtype)
        xp.add.at(ga, index, g)  # advanced indexing may pick an element several times: add, don't assign
        return (ga,)
    return Tensor._make(out, (a,), backward, "getitem")


@register("cat")
def cat(tensors, dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    first = tensors[0]
    d = normalize_dim(dim, first.ndim, "cat")
    for t in tensors[1:]:
        _check_joinable(first, t, d, "cat")
    xp = backend.array_module(first.data)
    out = xp.concatenate([t.data for t in tensors], axis=d)
    bounds = []
    start = 0
    for t in tensors:
        bounds.append((start, start + t.shape[d]))
        start += t.shape[d]

    def backward(g):
        idx = [slice(None)] * g.ndim
        grads = []
        for lo, hi in bounds:
            idx[d] = slice(lo, hi)
            grads.append(g[tuple(idx)])
        return tuple(grads)
    return Tensor._make(out, tuple(tensors), backward, "cat")


def _check_joinable(a: Tensor, b: Tensor, d: int, op: str) -> None:
    from ._util import check_same
    check_same(a, b, op)
    same = a.ndim == b.ndim and all(x == y for i, (x, y) in enumerate(zip(a.shape, b.shape)) if i != d)
    if not same:
        raise ValueError(
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ outside dim {d}; "
            "all tensors must have the same shape except along the joined dimension"
        )


@register("stack")
def stack(tensors, dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    first = tensors[0]
    d = normalize_dim(dim, first.ndim + 1, "stack")
    for t in tensors[1:]:
        if tuple(t.shape) != tuple(first.shape):
            raise ValueError(f"stack: all tensors must have one shape, got {tuple(first.shape)} and {tuple(t.shape)}; "
                             "to join along an existing dim where sizes differ, use cat")
        _check_joinable(first, t, -1, "stack")
    xp = backend.array_module(first.data)
    out = xp.stack([t.data for t in tensors], axis=d)

    def backward(g):
        return tuple(xp.take(g, i, axis=d) for i in range(len(tensors)))
    return Tensor._make(out, tuple(tensors), backward, "stack")


@register("split")
def split(a: Tensor, split_size_or_sections, dim: int = 0):
    """Pieces of ``a`` along ``dim``: equal pieces of a given size, or given sizes (torch.split)."""
    d = normalize_dim(dim, a.ndim, "split")
    n = a.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0:
            raise ValueError(f"split: the size of a piece must be positive, got {size}")
        sizes = [min(size, n - s) for s in range(0, n, size)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, but dim {d} of shape {tuple(a.shape)} "
                             f"has size {n}; give sizes that add up to {n}, or one int for equal pieces")
    pieces, start = [], 0
    for s in sizes:
        idx = (slice(None),) * d + (slice(start, start + s),)
        pieces.append(getitem(a, idx))
        start += s
    return tuple(pieces)


@register("to_device")
def to_device(a: Tensor, device: str) -> Tensor:
    src = a.device
    out = backend.to_device(a.data, device)

    def backward(g):
        return (backend.to_device(g, src),)
    return Tensor._make(out, (a,), backward, "to_device")


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    d = normalize_dim(dim, a.ndim + 1, "unsqueeze")
    shape = tuple(a.shape[:d]) + (1,) + tuple(a.shape[d:])
    return reshape(a, shape)


def squeeze(a: Tensor, dim=None) -> Tensor:
    if dim is None:
        shape = tuple(s for s in a.shape if s != 1)
    else:
        d = normalize_dim(dim, a.ndim, "squeeze")
        shape = tuple(s for i, s in enumerate(a.shape) if not (i == d and s == 1))
    return reshape(a, shape)
