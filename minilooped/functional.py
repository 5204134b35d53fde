"""Functions on tensors under torch.nn.functional's names, so model code reads alike.

    import minilooped.functional as F      # core
    import torch.nn.functional as F        # mirror
"""
from __future__ import annotations

from .ops.elementwise import relu, tanh, sigmoid, softplus, exp, log, where, masked_fill  # noqa: F401
from .ops.elementwise import gelu  # noqa: F401
from .ops.linalg import linear, matmul  # noqa: F401
from .ops.fused import (  # noqa: F401
    softmax, log_softmax, cross_entropy, layer_norm, rms_norm, embedding, dropout,
    scaled_dot_product_attention,
)

__all__ = [
    "relu", "tanh", "sigmoid", "softplus", "exp", "log", "where", "masked_fill", "gelu", "linear",
    "matmul", "softmax", "log_softmax", "cross_entropy", "layer_norm", "rms_norm", "embedding",
    "dropout", "scaled_dot_product_attention",
]
