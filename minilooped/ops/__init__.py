"""The ops of the core, each with its backward beside its forward.

``OPS`` lists every differentiable op by name; tests/test_ops.py (test_every_op_is_covered)
fails if one of them has no gradient check and no comparison with PyTorch.
"""
from .registry import OPS, register  # noqa: F401
from . import elementwise, reduce, shape, linalg, fused  # noqa: F401  (registers the ops)
