"""minilooped: looped transformers from scratch.

The from-scratch core (this package's backend, tensor, ops, functional, nn and optim)
runs on NumPy, or on CuPy for GPUs. ``minilooped.torch`` holds the PyTorch mirror.
"""
from . import backend
from .backend import float32, float64, float16, cuda_available
from .tensor import Tensor, tensor, no_grad, enable_grad, is_grad_enabled
from . import _methods  # noqa: F401  (gives Tensor its operators and methods)
from .ops.shape import cat, stack, split
from .ops.elementwise import where
from .creation import zeros, ones, zeros_like, ones_like, randn, rand, arange, full, manual_seed
from . import functional  # noqa: F401
from . import nn, optim, io  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "cat", "stack", "split",
    "where", "zeros", "ones", "zeros_like", "ones_like", "randn", "rand", "arange", "full",
    "manual_seed", "float32", "float64", "float16", "cuda_available", "functional", "nn", "optim",
    "io", "backend",
]
