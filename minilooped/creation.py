"""Creating tensors: zeros, ones, random numbers (seeded by ``manual_seed``)."""
from __future__ import annotations

from . import backend
from .tensor import Tensor


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _dtype(dtype):
    return backend.float32 if dtype is None else backend.as_dtype(dtype)


def zeros(*shape, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    xp = backend.module_for(device)
    return Tensor(xp.zeros(_shape(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    xp = backend.module_for(device)
    return Tensor(xp.ones(_shape(shape), dtype=_dtype(dtype)), requires_grad=requires_grad)


def full(shape, value, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    xp = backend.module_for(device)
    return Tensor(xp.full(tuple(shape), value, dtype=_dtype(dtype)), requires_grad=requires_grad)


def zeros_like(t: Tensor, requires_grad=False) -> Tensor:
    xp = backend.array_module(t.data)
    return Tensor(xp.zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad=False) -> Tensor:
    xp = backend.array_module(t.data)
    return Tensor(xp.ones_like(t.data), requires_grad=requires_grad)


def randn(*shape, dtype=None, device="cpu", requires_grad=False, std: float = 1.0) -> Tensor:
    """Standard normal samples (times ``std``) from the seeded generator of ``device``."""
    g = backend.generator(device)
    data = g.standard_normal(_shape(shape), dtype=backend.float64).astype(_dtype(dtype))
    if std != 1.0:
        data *= std
    return Tensor(data, requires_grad=requires_grad)


def rand(*shape, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    g = backend.generator(device)
    return Tensor(g.random(_shape(shape)).astype(_dtype(dtype)), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device="cpu") -> Tensor:
    xp = backend.module_for(device)
    if stop is None:
        start, stop = 0, start
    return Tensor(xp.arange(start, stop, step, dtype=dtype or "int64"))


def manual_seed(seed: int) -> None:
    """Seed parameter initialisation and dropout (like torch.manual_seed)."""
    backend.manual_seed(seed)
