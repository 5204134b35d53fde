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
import math
import threading

from . import backend
from .backend import np

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

        Gradients accumulate (``+=``) into ``.grad``, as in PyTorch: call
        ``optimizer.zero_grad()`` between steps. Unless ``retain_graph`` is True the
        graph's saved arrays are released as soon as they are used, so activations
        are freed during the backward pass rather than after it.
        """
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

        order = topological_order(self)
        grads = {id(self): grad}
        owned = set()  # keys whose gradient array the engine allocated itself: safe to add into
        for i, node in enumerate(order):
            order[i] = None  # the list must not keep visited nodes alive
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if isinstance(g, SliceGrads):
                g = g.assemble()
                owned.add(id(node))
            mine = id(node) in owned
            owned.discard(id(node))
            if node._freed:
                raise RuntimeError(
                    f"backward through the graph a second time: the saved values of op "
                    f"'{node._op}' were freed by the first backward(). Call "
                    "backward(retain_graph=True) the first time if you need to go back twice, "
                    "or recompute the forward pass"
                )
            if node._retain or not node._parents:
                node._accumulate(g, copy=not mine or bool(node._parents))
            if not node._parents:
                continue
            parent_grads = node._backward(g)
            for parent, pg in zip(node._parents, parent_grads):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                fresh = isinstance(pg, Fresh)
                if fresh:
                    pg = pg.array
                if isinstance(pg, SliceGrad):
                    # a gradient that is zero outside a slice: collect the slices (SliceGrads),
                    # or add this one alone into the dense gradient already there
                    if key not in grads:
                        grads[key] = SliceGrads(pg)
                    elif isinstance(grads[key], SliceGrads):
                        grads[key].parts.append(pg)
                    else:
                        if key not in owned:
                            grads[key] = grads[key].copy()
                            owned.add(key)
                        pg.add_into(grads[key])
                    continue
                if isinstance(grads.get(key), SliceGrads):
                    grads[key] = grads[key].assemble()    # a dense gradient joins the slices
                    owned.add(key)
                if key in owned:
                    grads[key] += pg                   # our own array: add in place
                elif key in grads:
                    if fresh:
                        pg += grads[key]               # the op's new array is ours to add into
                        grads[key] = pg
                    else:
                        # out-of-place: either array may be a view that another op still
                        # holds; the sum is a new array of ours
                        grads[key] = grads[key] + pg
                    owned.add(key)
                else:
                    grads[key] = pg
                    if fresh:
                        owned.add(key)
            del parent_grads, g
            if not retain_graph:
                # Dropping the closure and the links to the parents frees the activations
                # this op saved, and lets every intermediate tensor be collected as soon as
                # the backward pass is past it (as PyTorch does).
                node._backward = None
                node._parents = ()
                node._freed = True

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


class Fresh:
    """A gradient the op allocated in its backward and keeps no reference to.

    The engine may then add other gradients into it in place. Without the mark it must
    assume the array is shared (an op may return its own input ``g``, or a saved array)
    and make every first sum a new array: one more pass over memory, and a cold one.
    """

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


class SliceGrad:
    """The gradient of a slice ``a[index]``: ``g`` inside the slice, zero elsewhere.

    ``q, k, v = qkv.split(C, dim=2)`` makes three slices of one tensor. Returning each
    gradient as a full array of zeros with ``g`` in its slice would cost three arrays of
    qkv's size and two additions of them; given the index instead, the engine writes each
    ``g`` straight into one buffer.
    """

    __slots__ = ("shape", "index", "g")

    def __init__(self, shape, index, g):
        self.shape, self.index, self.g = tuple(shape), index, g

    def zeros(self):
        return backend.array_module(self.g).zeros(self.shape, dtype=self.g.dtype)

    def add_into(self, buf) -> None:
        buf[self.index] += self.g

    def box(self):
        """The slice as ((start, stop) per dim), or None for any index other than plain slices."""
        index = self.index if isinstance(self.index, tuple) else (self.index,)
        if len(index) > len(self.shape) or not all(isinstance(i, slice) for i in index):
            return None
        index += (slice(None),) * (len(self.shape) - len(index))
        box = []
        for i, n in zip(index, self.shape):
            start, stop, step = i.indices(n)
            if step != 1:
                return None
            box.append((start, max(start, stop)))
        return tuple(box)


class SliceGrads:
    """The SliceGrads one tensor has received so far, written into one buffer when needed.

    Usually they come from ``split`` and fill the tensor exactly, piece by piece (q, k, v):
    then each piece is copied into an empty buffer, which is half the memory traffic of
    zeroing the buffer first and adding every piece into it. Anything else (overlapping
    slices, a part left zero, an int or step in an index) takes the general way.
    """

    __slots__ = ("parts",)

    def __init__(self, first: SliceGrad):
        self.parts = [first]

    def assemble(self):
        first = self.parts[0]
        xp = backend.array_module(first.g)
        if self._tile():
            buf = xp.empty(first.shape, dtype=first.g.dtype)
            for part in self.parts:
                buf[part.index] = part.g
            return buf
        buf = first.zeros()
        for part in self.parts:
            part.add_into(buf)
        return buf

    def _tile(self) -> bool:
        """True if the parts' slices are disjoint and cover the whole tensor."""
        boxes = [part.box() for part in self.parts]
        if any(b is None for b in boxes):
            return False
        size = lambda b: math.prod(hi - lo for lo, hi in b)  # noqa: E731
        if sum(size(b) for b in boxes) != math.prod(self.parts[0].shape):
            return False
        for i, a in enumerate(boxes):
            for b in boxes[:i]:
                if all(lo1 < hi2 and lo2 < hi1 for (lo1, hi1), (lo2, hi2) in zip(a, b)):
                    return False                           # they overlap
        return True


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
