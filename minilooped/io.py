"""Weights on disk as safetensors: the same file loads into the core and the mirror.

Tied parameters (GPT-2's lm_head.weight is transformer.wte.weight) are stored once,
under their first name, and the file's metadata records the alias so that loading
restores both names. Files are written atomically: to a temporary file first, then
renamed, so an interrupted save never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import json
import os

from . import backend
from .atomic import atomic_write_file
from .backend import np


def _arrays(obj):
    """A state dict of host arrays from a Module, a dict of arrays or of torch tensors."""
    sd = obj.state_dict() if hasattr(obj, "state_dict") else obj
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor (duck-typed, no import)
            v = v.detach().cpu().numpy()
        elif hasattr(v, "data") and not isinstance(v, np.ndarray) and hasattr(v.data, "shape"):
            v = v.data                                   # a minilooped Tensor
        out[k] = v
    return out


def save_safetensors(obj, path, metadata: dict | None = None) -> None:
    """Save a module's (or a state dict's) weights to ``path``."""
    from safetensors.numpy import save_file

    sd = _arrays(obj)
    tensors, tied, first_name = {}, {}, {}
    for k, v in sd.items():
        # tied weights share memory: same buffer address, shape and dtype (on the GPU too)
        iface = getattr(v, "__array_interface__", None) or getattr(v, "__cuda_array_interface__", None)
        key = (iface["data"][0], tuple(v.shape), str(v.dtype)) if iface and v.size else None
        if key is not None and key in first_name:
            tied[k] = first_name[key]
            continue
        if key is not None:
            first_name[key] = k
        tensors[k] = np.ascontiguousarray(backend.to_numpy(v))
    meta = {"format": "pt", "minilooped.tied": json.dumps(tied)}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    atomic_write_file(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_safetensors(path, with_metadata: bool = False):
    """The state dict stored in ``path`` (tied names restored) as NumPy arrays."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path!r}: check the path, or train/save a model first")
    try:
        sd = load_file(path)
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ValueError(f"{path!r} is not a readable safetensors file ({exc}); it may be truncated or corrupt") from None
    for alias, source in json.loads(meta.get("minilooped.tied", "{}")).items():
        sd[alias] = sd[source]
    return (sd, meta) if with_metadata else sd
