"""The PyTorch mirror of minilooped.models: GPT-2 and the looped family with torch.nn.

Same module tree, parameter names and shapes as the NumPy core, so state dicts move
between the two (tests/test_parity.py). GPTConfig is the core's, shared.
"""
from ...models.config import GPTConfig, PRESETS, VARIANTS
from .gpt import GPT
from .recursive import from_gpt2

__all__ = ["GPTConfig", "PRESETS", "VARIANTS", "GPT", "from_gpt2"]
