"""Who owns a gradient array during ``backward()``, and how gradients are added up.

``Tensor.backward`` only asks two things of this module: ``GradBuffers.add(parent, g)``
(one more gradient reached ``parent``) and ``GradBuffers.take(node)`` (``node``'s summed
gradient, once every gradient has reached it). The rest is about not copying:

- an op's backward may return an array that something else still holds (its input ``g``,
  a saved array, a view of either), so the first sum of two such gradients must be a new
  array; an op that allocated its gradient itself says so with ``Fresh(array)``, and the
  engine may then add into it in place;
- a gradient the engine allocated itself (a sum) is *owned*: later gradients are added
  into it in place, and a leaf may keep it as its ``.grad`` without a copy;
- the gradient of a slice (``SliceGrad``: ``g`` inside ``a[index]``, zero elsewhere) is
  kept as the slice until the parent's gradient is needed, then written into one buffer
  (``SliceGrads``): the q, k and v of ``qkv.split`` fill one array, no zeros added.

tests/test_fast_paths.py checks the slice gradients; every gradient check in the tests
goes through here.
"""
from __future__ import annotations

import math

from . import backend


class GradBuffers:
    """The gradients received so far during one ``backward()``, by tensor."""

    __slots__ = ("_grads", "_owned")

    def __init__(self, root, grad):
        self._grads = {id(root): grad}   # id(tensor) -> array, or SliceGrads not yet assembled
        self._owned = set()              # ids whose array the engine allocated: safe to add into

    def take(self, node):
        """(node's summed gradient or None, whether the engine owns that array); forgets it."""
        key = id(node)
        g = self._grads.pop(key, None)
        if isinstance(g, SliceGrads):
            g = g.assemble()
            self._owned.add(key)
        owned = key in self._owned
        self._owned.discard(key)
        return g, owned

    def add(self, parent, pg) -> None:
        """Add ``pg`` (an array, ``Fresh`` or ``SliceGrad``) to the gradient of ``parent``."""
        grads, owned, key = self._grads, self._owned, id(parent)
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
            return
        if isinstance(grads.get(key), SliceGrads):
            grads[key] = grads[key].assemble()    # a dense gradient joins the slices
            owned.add(key)
        if key in owned:
            grads[key] += pg                      # our own array: add in place
        elif key in grads:
            if fresh:
                pg += grads[key]                  # the op's new array is ours to add into
                grads[key] = pg
            else:
                # out-of-place: either array may be a view that another op still holds;
                # the sum is a new array of ours
                grads[key] = grads[key] + pg
            owned.add(key)
        else:
            grads[key] = pg
            if fresh:
                owned.add(key)


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
