"""Module: the base class of every layer and model, with PyTorch's interface.

Assigning a Parameter or a Module to an attribute registers it, so ``parameters()``
and ``state_dict()`` find every weight by walking the tree of modules. Names are the
attribute paths -- ``transformer.h.0.attn.c_attn.weight`` -- the same in the PyTorch
mirror and in GPT-2 checkpoints.
"""
from __future__ import annotations

from collections import OrderedDict

from .. import backend
from ..tensor import Tensor, _target_dtype
from .parameter import Parameter


class StateDictError(RuntimeError, KeyError):
    """load_state_dict's error: a RuntimeError as in torch, and a KeyError for callers that
    catch one. str() is the message itself -- KeyError's own would print it quoted, with
    every line break shown as \\n, unreadable for a list of keys."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Module:
    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"cannot assign {name!r} before Module.__init__() ran: call super().__init__() "
                "first in your module's __init__"
            )
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        setattr(self, name, param)

    def register_buffer(self, name: str, value, persistent: bool = True) -> None:
        """A tensor that is part of the state (saved, moved) but not trained."""
        if not isinstance(value, Tensor) and value is not None:
            value = Tensor(value)
        object.__setattr__(self, name, value)
        self._buffers[name] = value
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module") -> None:
        setattr(self, name, module)

    # ----------------------------------------------------------------- walking
    def named_modules(self, prefix: str = "", memo=None):
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True):
        """(name, parameter) pairs; a tied parameter is listed once, under its first name."""
        seen = set()
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if p is None:
                    continue
                if remove_duplicate:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = ""):
        for mod_name, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def get_submodule(self, target: str) -> "Module":
        m = self
        for part in target.split(".") if target else []:
            if part not in m._modules:
                raise AttributeError(f"{type(m).__name__} has no submodule {part!r} (looking up {target!r})")
            m = m._modules[part]
        return m

    # ------------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, object]":
        """Every parameter and persistent buffer by name, as backend arrays.

        Tied parameters appear under each of their names, as in PyTorch.
        """
        out = OrderedDict()
        for mod_name, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mod_name}.{name}" if mod_name else name] = p.data
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    out[f"{mod_name}.{name}" if mod_name else name] = b.data
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into the parameters with the same names.

        With ``strict`` every key must match: missing, unexpected and mis-shaped keys are
        all reported together, with the fix.
        """
        own = {}
        for mod_name, m in self.named_modules():
            for name, p in list(m._parameters.items()) + [
                (n, b) for n, b in m._buffers.items() if n not in m._non_persistent
            ]:
                if p is not None:
                    own[f"{mod_name}.{name}" if mod_name else name] = p
        missing = [k for k in own if k not in state_dict]
        # a tied parameter is complete when any one of its names was given
        by_id = {}
        for k, p in own.items():
            by_id.setdefault(id(p), []).append(k)
        missing = [k for k in missing if not any(a in state_dict for a in by_id[id(own[k])])]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for k, v in state_dict.items():
            if k in own and tuple(_shape(v)) != tuple(own[k].shape):
                mismatched.append(f"{k}: checkpoint {tuple(_shape(v))} vs model {tuple(own[k].shape)}")
        if mismatched or (strict and (missing or unexpected)):
            lines = []
            if missing:
                lines.append("missing keys: " + ", ".join(missing))
            if unexpected:
                lines.append("unexpected keys: " + ", ".join(unexpected))
            if mismatched:
                lines.append("shape mismatch: " + "; ".join(mismatched))
            raise StateDictError(
                f"load_state_dict into {type(self).__name__} failed:\n  " + "\n  ".join(lines)
                + "\nthe checkpoint was made for a different configuration: build the model from "
                "the checkpoint's config, or pass strict=False to load the keys that match"
            )
        for k, v in state_dict.items():
            if k in own:
                p = own[k]
                xp = backend.array_module(p.data)
                arr = _to_array(v, xp)
                p.data = xp.array(arr, dtype=p.dtype, copy=True)
        return missing, unexpected

    # ------------------------------------------------------------- train / eval
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, flag: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def apply(self, fn) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # --------------------------------------------------------- device & dtype
    def to(self, target) -> "Module":
        """Move every parameter and buffer to a device ('cpu'/'cuda') or cast to a dtype."""
        is_device = isinstance(target, str) and target.split(":")[0] in ("cpu", "cuda")
        dtype = None if is_device else _target_dtype(target)  # a clear error before anything moves
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is None:
                        continue
                    if is_device:
                        t.data = backend.to_device(t.data, target)
                    elif t.dtype.kind == "f":
                        t.data = t.data.astype(dtype)
                    if t.grad is not None:
                        t.grad = None
        return self

    def float(self) -> "Module":
        return self.to(backend.float32)

    def double(self) -> "Module":
        return self.to(backend.float64)

    def cuda(self) -> "Module":
        return self.to("cuda")

    def cpu(self) -> "Module":
        return self.to("cpu")

    # ------------------------------------------------------------------- call
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        children = list(self.named_children())
        if not children:
            return lines[0] + ")"
        for name, m in children:
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


def _shape(v):
    return v.shape if hasattr(v, "shape") else backend.np.asarray(v).shape


def _to_array(v, xp):
    """Arrays from any source: numpy, cupy, or (by duck typing) a torch tensor."""
    if isinstance(v, Tensor):
        return v.data
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor, without importing torch
        v = v.detach().cpu().numpy()
    return xp.asarray(v)
