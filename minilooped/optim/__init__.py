"""minilooped.optim: SGD, AdamW, gradient clipping and the LR schedule, with PyTorch's semantics."""
from .optimizer import Optimizer
from .sgd import SGD
from .adamw import AdamW
from .clip import clip_grad_norm_
from . import lr_schedule
from .lr_schedule import warmup_cosine, set_lr

__all__ = ["Optimizer", "SGD", "AdamW", "clip_grad_norm_", "lr_schedule", "warmup_cosine", "set_lr"]
