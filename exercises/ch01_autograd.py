"""Chapter 1 exercises: autograd from scratch.

    python -m minilooped.grade 1      # grade them all: a score table
    pytest -m ex1_3                   # one exercise, with the full failure report

The backward functions work on arrays (``tensor.data``, NumPy here, CuPy on a GPU), not
on Tensors: a backward pass records no graph. Use array methods (``g.sum(axis=...)``,
``a.swapaxes(-1, -2)``) rather than ``np.`` functions and your code runs on both.
Each exercise is graded on its own; the library stands in for the other ones.
"""


def tanh_backward(g, out):
    """Exercise 1.1 -- the backward rule of ``out = tanh(a)``.

    Inputs: ``g``, the gradient dL/d(out), and ``out`` = tanh(a) itself, arrays of the
    same shape and dtype.
    Return: dL/da, an array of that shape and dtype:

        dL/da = g * (1 - out^2)          since d tanh(a) / da = 1 - tanh(a)^2

    Use ``out``: the forward pass saved it, so there is no need to keep ``a`` or to
    compute tanh again. Keep float32 inputs float32 (multiply by Python floats, not by
    float64 arrays). Library: ``minilooped.ops.elementwise.tanh_backward``.
    """
    raise NotImplementedError("ex1_1: tanh_backward")


def unbroadcast(g, shape):
    """Exercise 1.2 -- sum a gradient back down to the shape of a broadcast operand.

    ``a + b`` with ``a`` of shape (3, 1) and ``b`` of shape (2, 1, 4) broadcasts both to
    (2, 3, 4): ``a`` is copied along a new leading axis and along its axis of size 1.
    Every copy received gradient, so dL/da is the sum over the copies.

    Inputs: ``g``, an array of the broadcast shape; ``shape``, a tuple, the operand's
    shape (broadcastable to ``g.shape``: aligned from the right, each size equals g's
    or is 1; it may have fewer dims, even none).
    Return: an array of exactly ``shape`` (``g`` itself when the shapes are equal):

        1. sum ``g`` over its extra leading axes (g.ndim - len(shape) of them);
        2. sum, keeping the axis (``keepdims=True``), over every axis where ``shape``
           has size 1 and ``g`` does not.

    Example: g of shape (2, 3, 4) and shape (3, 1) -> g.sum(axis=0).sum(axis=1, keepdims=True).
    Library: ``minilooped.ops._util.unbroadcast``.
    """
    raise NotImplementedError("ex1_2: unbroadcast")


def matmul_backward(g, a, b):
    """Exercise 1.3 -- the gradients of a batched matrix product ``out = a @ b``.

    Inputs: ``a`` of shape (..., n, k), ``b`` of shape (..., k, m), whose batch dims
    ``...`` broadcast together (e.g. a (8, 5, 3) and b (3, 2): b is shared by the 8
    products); ``g`` = dL/d(out), of shape (broadcast batch dims..., n, m).
    Return: the tuple ``(dL/da, dL/db)``, of the shapes of ``a`` and ``b``:

        dL/da = g @ b^T,    dL/db = a^T @ g        (^T swaps the last two axes)

    each then summed over the batch dims its operand was broadcast along. You may use
    ``from minilooped.ops._util import unbroadcast`` (exercise 1.2's reference).
    Library: ``minilooped.ops.linalg.matmul_backward``.
    """
    raise NotImplementedError("ex1_3: matmul_backward")


def topological_order(root):
    """Exercise 1.4 -- the order in which ``backward()`` visits the graph.

    Input: ``root``, a Tensor that requires grad (the loss). Every Tensor ``t`` lists the
    tensors it was computed from in ``t._parents`` (a tuple; empty for leaves) and says
    whether it needs a gradient in ``t.requires_grad``.
    Return: a list of the tensors reachable from ``root`` through ``_parents`` that
    require grad (``root`` included), each exactly once, such that ``root`` comes first
    and every tensor comes before all of its parents. Skip parents that do not require
    grad. Then when ``backward()`` reaches a tensor, every tensor that uses it has
    already passed its gradient down, so that gradient is complete.

    Hints: depth-first search, appending a tensor after all its parents (post-order),
    then reverse. A tensor reached twice (``x`` in ``x * x``) is listed once: remember
    visited tensors in a set of ``id(t)``. Graphs can be 100,000 ops deep, beyond
    Python's recursion limit: use an explicit stack, not recursion.
    Library: ``minilooped.tensor.topological_order``.
    """
    raise NotImplementedError("ex1_4: topological_order")


def softmax_backward(g, y, axis):
    """Exercise 1.5 -- the backward of softmax, without building its Jacobian.

    Forward: y = softmax(x) along ``axis``, y_i = exp(x_i) / sum_j exp(x_j).
    Inputs: ``g`` = dL/dy and ``y``, arrays of the same shape; ``axis``, a non-negative
    int, the axis softmax normalised over.
    Return dL/dx, of that shape. The Jacobian of one softmax vector is
    J_ij = dy_i/dx_j = y_i (delta_ij - y_j), so (J is symmetric)

        dL/dx_j = sum_i g_i y_i (delta_ij - y_j) = y_j * (g_j - sum_i g_i y_i)

    Compute the sum along ``axis`` with ``keepdims=True`` so it broadcasts back. A (T, T)
    Jacobian per row would cost T times the memory: never build it.
    Library: ``minilooped.ops.fused.softmax_backward``.
    """
    raise NotImplementedError("ex1_5: softmax_backward")
