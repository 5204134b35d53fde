"""Attach the ops to Tensor as methods and operators (x + y, x @ w, x.sum(), ...)."""
from __future__ import annotations

from .tensor import Tensor
from .ops import elementwise as E, reduce as R, shape as S, linalg as L


def _install():
    from .ops._util import operand

    T = Tensor
    T.__add__ = lambda a, b: E.add(a, b)
    T.__radd__ = lambda a, b: E.add(a, b)
    T.__sub__ = lambda a, b: E.sub(a, b)
    T.__rsub__ = lambda a, b: E.sub(operand(b, a, "sub"), a)
    T.__mul__ = lambda a, b: E.mul(a, b)
    T.__rmul__ = lambda a, b: E.mul(a, b)
    T.__truediv__ = lambda a, b: E.div(a, b)
    T.__rtruediv__ = lambda a, b: E.div(operand(b, a, "div"), a)
    T.__pow__ = lambda a, b: E.pow(a, b)
    T.__rpow__ = lambda a, b: E.pow(operand(b, a, "pow"), a)
    T.__neg__ = lambda a: E.neg(a)
    T.__matmul__ = lambda a, b: L.matmul(a, b)
    T.__rmatmul__ = lambda a, b: L.matmul(operand(b, a, "matmul"), a)
    T.__getitem__ = lambda a, i: S.getitem(a, i)
    # comparisons give plain boolean arrays: they have no gradient
    T.__lt__ = lambda a, b: a.data < (b.data if isinstance(b, Tensor) else b)
    T.__le__ = lambda a, b: a.data <= (b.data if isinstance(b, Tensor) else b)
    T.__gt__ = lambda a, b: a.data > (b.data if isinstance(b, Tensor) else b)
    T.__ge__ = lambda a, b: a.data >= (b.data if isinstance(b, Tensor) else b)

    for name in ("exp", "log", "tanh", "sqrt", "relu", "sigmoid", "abs", "softplus"):
        setattr(T, name, getattr(E, name))
    T.pow = E.pow
    T.masked_fill = E.masked_fill
    T.sum = R.sum
    T.mean = R.mean
    T.max = R.max
    T.amax = R.max
    T.var = R.var
    T.reshape = S.reshape
    T.view = S.reshape
    T.transpose = S.transpose
    T.permute = S.permute
    T.split = S.split
    T.unsqueeze = S.unsqueeze
    T.squeeze = S.squeeze
    T.flatten = lambda a: S.reshape(a, -1)

    def chunk(a, chunks, dim=0):
        n = a.shape[dim]
        return S.split(a, -(-n // chunks), dim)
    T.chunk = chunk

    def softmax(a, dim=-1):
        from .ops.fused import softmax as f
        return f(a, dim)
    T.softmax = softmax

    def log_softmax(a, dim=-1):
        from .ops.fused import log_softmax as f
        return f(a, dim)
    T.log_softmax = log_softmax


_install()
