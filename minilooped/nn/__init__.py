"""minilooped.nn: modules and layers with torch.nn's names and behaviour."""
from .module import Module
from .parameter import Parameter
from .layers import Linear, Embedding, LayerNorm, RMSNorm, Dropout, GELU, ReLU, Identity
from .container import ModuleList, Sequential, ModuleDict
from . import init
from .. import functional

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "GELU",
           "ReLU", "Identity", "ModuleList", "Sequential", "ModuleDict", "init", "functional"]
