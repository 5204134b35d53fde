"""Parameter: a leaf tensor that a Module registers and an optimiser updates."""
from __future__ import annotations

from ..tensor import Tensor, _as_array


class Parameter(Tensor):
    """A tensor that requires grad and is found by ``Module.parameters()``."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        arr = _as_array(data)
        if arr.dtype.kind != "f":
            arr = arr.astype("float32")
        super().__init__(arr, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
