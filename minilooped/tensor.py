"""The Tensor and its reverse-mode automatic differentiation.

A Tensor wraps an array (``.data``, NumPy or CuPy) and remembers how it was made: the
tensors it came from (``_parents``) and a function (``_backward``) that turns the
gradient of the loss with respect to this tensor into gradients with respect to those
parents -- the chain rule, one op at a time. ``loss.backward()`` visits the graph in
reverse topological order, so every tensor has received all of its gradient before it
passes it on.

The ops themselves live in ``minilooped/ops/``: each one computes its forward value and
defines its backward right beside it, then calls ``Tensor._make``.
"""
from __future__ import annotations

import contextlib
import threading

from . import backend
from .backend import np
from .grad_buffers import Fresh, GradBuffers, SliceGrad, SliceGrads  # noqa: F401  (the ops import Fresh, SliceGrad here)

# ----------------------------------------------------------------- grad mode
class _GradMode(threading.local):
    """Whether ops record the graph, per thread (as in PyTorch): a thread inside no_grad()
    does not switch off the graph of another thread (training/threads.py runs several)."""
    enabled = True


_grad_mode = _GradMode()


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded: for evaluation and optimiser updates."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


@contextlib.contextmanager
def enable_grad():
    previous = _grad_mode.enabled
    _grad_mode.enabled = True
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


_DEFAULT_DTYPE = backend.float32


def _as_array(data, dtype=None):
    """Turn lists, scalars and arrays into a backend array of a sensible dtype."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.array_module(data)
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    if isinstance(data, (int, float, list, tuple)) and not isinstance(data, bool):
        arr = np.asarray(data)
        # Python floats become float32, as in PyTorch; Python ints stay integers.
        if arr.dtype.kind == "f":
            arr = arr.astype(_DEFAULT_DTYPE)
        return arr
    return xp.asarray(data)


class Tensor:
    """An n-dimensional array that records the ops applied to it.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op",
                 "_retain", "_freed", "__weakref__")
    __array_priority__ = 1000  # so that `array * tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}; "
                "pass float data, e.g. Tensor(x, dtype='float32', requires_grad=True)"
            )
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self._op = ""
        self._retain = False
        self._freed = False

    # ------------------------------------------------------------ graph building
    @staticmethod
    def _make(data, parents, backward, op: str) -> "Tensor":
        """The output of an op: records parents and backward if a gradient is needed.

        ``backward(g)`` receives the gradient of the output and returns one gradient
        (or None) per parent, each of its parent's shape.
        """
        out = Tensor.__new__(Tensor)
        if isinstance(data, np.generic):  # NumPy reductions give scalars; keep 0-d arrays
            data = np.asarray(data)
        out.data = data
        out.grad = None
        out._op = op
        out._retain = False
        out._freed = False
        if _grad_mode.enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
        else:
            out.requires_grad = False
            out._parents = ()
            out._backward = None
        return out

    # ----------------------------------------------------------------- backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Fill ``.grad`` of every leaf that requires it with d(self)/d(leaf).

        The chain rule, node by node, as in micrograd: visit the graph from ``self`` back
        to the leaves (``topological_order``), hand each node's gradient to its backward,
        and add what comes out to the gradients of its parents (``GradBuffers``, which
        also decides when an array may be added into in place: grad_buffers.py).

        Gradients accumulate (``+=``) into ``.grad``, as in PyTorch: call
        ``optimizer.zero_grad()`` between steps. Unless ``retain_graph`` is True the
        graph's saved arrays are released as soon as they are used, so activations
        are freed during the backward pass rather than after it.
        """
        grad = self._first_gradient(grad)                  # d(self)/d(self): ones, or the given grad
        order = topological_order(self)                    # self first, each node before its parents
        grads = GradBuffers(self, grad)                    # who holds which gradient: grad_buffers.py
        for i, node in enumerate(order):
            order[i] = None                                # the list must not keep visited nodes alive
            g, owned = grads.take(node)                    # dL/d(node), complete: its users came first
            if g is None:
                continue                                   # no path from self to this node
            if node._freed:
                raise _graph_freed(node)
            if node._retain or not node._parents:          # a leaf (or retain_grad()): keep it in .grad
                node._accumulate(g, copy=not owned or bool(node._parents))
            if not node._parents:
                continue                                   # a leaf: nothing further back
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is not None and parent.requires_grad:
                    grads.add(parent, pg)                  # the chain rule: dL/dparent += pg
            g = pg = None                                  # let the next backward reuse their memory
            if not retain_graph:
                # Dropping the closure and the links to the parents frees the activations
                # this op saved, and lets every intermediate tensor be collected as soon as
                # the backward pass is past it (as PyTorch does).
                node._backward = None
                node._parents = ()
                node._freed = True

    def _first_gradient(self, grad):
        """The gradient ``backward(grad)`` starts from, after checking that it can start."""
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad and has no graph; make sure "
                "an input or parameter was created with requires_grad=True and that the "
                "computation did not run under no_grad()"
            )
        if self._freed:
            raise RuntimeError(
                f"backward through the graph a second time: op '{self._op}' was already "
                "back-propagated and its saved values freed; call backward(retain_graph=True) "
                "the first time, or recompute the forward pass"
            )
        xp = backend.array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {tuple(self.shape)} needs a gradient of the "
                    "same shape: reduce it to a scalar first (e.g. loss.sum() or loss.mean()) "
                    "or call backward(grad) with grad of that shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, self.data.dtype)
            if tuple(grad.shape) != tuple(self.shape):
                raise ValueError(
                    f"backward(grad): grad has shape {tuple(grad.shape)} but the tensor has shape "
                    f"{tuple(self.shape)}; pass a gradient of the tensor's shape"
                )
        return grad

    def _accumulate(self, g, copy: bool = True) -> None:
        if isinstance(g, np.generic):
            g = np.asarray(g)
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
            copy = False
        if self.grad is None:
            # a copy unless the engine made g itself: g may alias an array the graph (or the
            # user) still holds, and the optimiser will change .grad in place
            g = g if g.shape == self.data.shape else g.reshape(self.data.shape)
            self.grad = g.copy() if copy else g
        else:
            self.grad += g

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor too (for teaching and debugging)."""
        self._retain = True
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def detach(self) -> "Tensor":
        """The same values, cut from the graph: no gradient flows back through it."""
        return Tensor._make(self.data, (), None, "detach")

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = flag
        return self

    @property
    def is_leaf(self) -> bool:
        return not self._parents

    # ----------------------------------------------------------------- attributes
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def T(self) -> "Tensor":
        return self.transpose(-2, -1)

    def size(self, dim=None):
        return tuple(self.shape) if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        return len(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {tuple(self.shape)}")
        return self.data.reshape(()).item()

    def numpy(self):
        """The values as a NumPy array (copied from the GPU when on 'cuda')."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{dev}{grad})"

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError("the truth value of a tensor with more than one element is ambiguous; use .any() or .all() on .data")
        return bool(self.data)

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------ device & dtype
    def to(self, target) -> "Tensor":
        """``.to('cuda')`` / ``.to('cpu')`` moves; ``.to('float64')`` casts. Differentiable."""
        if isinstance(target, str) and target.split(":")[0] in ("cpu", "cuda"):
            from .ops.shape import to_device
            return to_device(self, target)
        from .ops.elementwise import cast
        return cast(self, _target_dtype(target))

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def float(self) -> "Tensor":
        return self.to(backend.float32)

    def double(self) -> "Tensor":
        return self.to(backend.float64)

    def contiguous(self) -> "Tensor":
        return self


def topological_order(root: Tensor) -> list:
    """The tensors ``root`` depends on that need a gradient, ``root`` first, every tensor
    before its parents (the tensors it was computed from).

    Depth-first search from ``root``: a tensor is appended once all its parents have
    been, which lists inputs before outputs; reversing gives the order ``backward()``
    needs, in which a tensor's gradient is complete before it is passed on. An explicit
    stack instead of recursion, so a graph 100,000 ops deep does not hit Python's
    recursion limit.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:                 # second visit: all its parents are in ``order``
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node._parents:
            if p.requires_grad and id(p) not in seen:
                stack.append((p, False))
    order.reverse()
    return order


def _graph_freed(node) -> RuntimeError:
    return RuntimeError(
        f"backward through the graph a second time: the saved values of op '{node._op}' were "
        "freed by the first backward(). Call backward(retain_graph=True) the first time if you "
        "need to go back twice, or recompute the forward pass"
    )


def _target_dtype(target):
    """The dtype of a ``.to(target)`` that is not a device, or an error naming both kinds."""
    try:
        return backend.as_dtype(target)
    except TypeError:
        raise ValueError(
            f"to({target!r}): not a device nor a dtype; use a device ('cpu', 'cuda') or a dtype "
            "('float32', 'float64', ml.float32, ...)"
        ) from None


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Like ``torch.tensor``: a new leaf tensor holding a copy of ``data``."""
    arr = _as_array(data, dtype)
    xp = backend.array_module(arr)
    return Tensor(xp.array(arr, copy=True), requires_grad=requires_grad)
