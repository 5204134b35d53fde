"""The Optimizer base class: parameter groups, zero_grad and state dicts (torch's layout)."""
from __future__ import annotations

import copy

from .. import backend
from ..tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: dict[int, dict] = {}       # keyed by id(param)
        self.param_groups: list[dict] = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list: pass model.parameters()")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__} can only optimise tensors that require grad, got {type(p).__name__}")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("a parameter appears in more than one parameter group; give each parameter to one group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """{'state': {index: {name: array or number}}, 'param_groups': [...]}, as torch."""
        index, groups = {}, []
        for g in self.param_groups:
            entry = {k: v for k, v in g.items() if k != "params"}
            entry["params"] = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                entry["params"].append(index[id(p)])
            groups.append(entry)
        state = {index[k]: {n: (v.copy() if hasattr(v, "copy") else v) for n, v in s.items()}
                 for k, s in self.state.items() if k in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(
                "optimizer state_dict does not fit: its parameter groups have different sizes "
                "from this optimizer's; it was saved for another model or grouping"
            )
        params = [p for g in self.param_groups for p in g["params"]]
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            xp = backend.array_module(p.data)
            # every array is copied, 0-d ones too (the moments of a scalar parameter): the
            # optimiser updates its state in place and must not write into state_dict
            self.state[id(p)] = {n: (xp.array(v, dtype=p.dtype) if _is_array(v) else v) for n, v in s.items()}
        for mine, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)


def _is_array(v) -> bool:
    """A NumPy or CuPy array (of any ndim), as opposed to a number such as ``step``."""
    return isinstance(v, backend.np.ndarray) or hasattr(v, "__cuda_array_interface__")
