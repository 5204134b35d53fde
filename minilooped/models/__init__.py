"""GPT-2 and the looped family, on the NumPy/CuPy core.

    from minilooped.models import GPTConfig, GPT
    model = GPT(GPTConfig.from_preset("shakespeare-loop-residual", vocab_size=65))
    logits, loss = model(idx, targets)

Variants (config.variant): gpt2, loop_residual, fully_looped, contractive, parcae,
recursive (built with ``from_gpt2``). minilooped.torch.models is the PyTorch mirror.
"""
from .config import GPTConfig, PRESETS, VARIANTS
from .gpt import GPT
from .recursive import from_gpt2
from .convert import from_hf_gpt2, config_from_hf_gpt2

__all__ = ["GPTConfig", "PRESETS", "VARIANTS", "GPT", "from_gpt2", "from_hf_gpt2", "config_from_hf_gpt2"]
