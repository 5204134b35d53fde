"""Chapter 1 exercises: autograd from scratch.

    python -m minilooped.grade 1      # grade them all: a score table
    pytest -m ex1_3                   # one exercise, with the full failure report

The backward functions work on arrays (``tensor.data``, NumPy here, CuPy on a GPU), not
on Tensors: a backward pass records no graph. Use array methods (``g.sum(axis=...)``,
``a.swapaxes(-1, -2)``) rather than ``np.`` functions and your code runs on both.
Each exercise is graded on its own; the library stands in for the other ones.
Exercises 1.2, 1.4 and 1.5 ask for a derivation or a design the chapter leaves to you.
"""


def tanh_backward(g, out):
    """Exercise 1.1 -- the backward rule of ``out = tanh(a)``, from the saved output.

    Inputs: ``g``, the gradient dL/d(out), and ``out`` = tanh(a) itself, arrays of the
    same shape and dtype. The forward pass saved ``out`` and nothing else: ``a`` is gone.
    Return: dL/da, an array of that shape and dtype.

    Write tanh's derivative as a function of tanh itself, so that ``out`` is all you
    need. Float32 inputs must give a float32 result (a float64 array anywhere in the
    expression would promote it). Library: ``minilooped.ops.elementwise.tanh_backward``.
    """
    raise NotImplementedError("ex1_1: tanh_backward")


def unbroadcast(g, shape):
    """Exercise 1.2 -- the gradient of an operand that broadcasting stretched.

    ``a + b`` with ``a`` of shape (3, 1) and ``b`` of shape (2, 1, 4) gives a result of
    shape (2, 3, 4): broadcasting used every entry of ``a`` and of ``b`` several times.

    Inputs: ``g``, dL/d(result), an array of the broadcast shape; ``shape``, a tuple, the
    operand's own shape (broadcastable to ``g.shape``: aligned from the right, each size
    equals g's or is 1; it may have fewer dims than g, even none).
    Return: dL/d(operand), an array of exactly ``shape`` (``g`` itself when the shapes are
    equal).

    Section 4 says what the gradient of a copied value is. Which axes of ``g`` hold
    copies, and how the result keeps the operand's shape, is for you to work out; check
    your answer by hand on g of shape (2, 3, 4) and shape (3, 1).
    Library: ``minilooped.ops._util.unbroadcast``.
    """
    raise NotImplementedError("ex1_2: unbroadcast")


def matmul_backward(g, a, b):
    """Exercise 1.3 -- the gradients of a batched matrix product ``out = a @ b``.

    Inputs: ``a`` of shape (..., n, k), ``b`` of shape (..., k, m), whose batch dims
    ``...`` broadcast together (e.g. a (8, 5, 3) and b (3, 2): b is shared by the 8
    products); ``g`` = dL/d(out), of shape (broadcast batch dims..., n, m).
    Return: the tuple ``(dL/da, dL/db)``, of the shapes of ``a`` and ``b``.

    Section 5 derives the gradients of one 2-D product; a batch of products adds the
    question of an operand that several products of the batch share. You may use
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
    and every tensor comes before all of its parents. Parents that do not require grad
    are left out. Then when ``backward()`` reaches a tensor, every tensor that uses it
    has already passed its gradient down, so that gradient is complete.

    The grader builds graphs in which one tensor is used several times, graphs with
    constants, and a chain 20,000 operations deep; ``Value.backward`` of section 2
    fails on the last (section 2 shows why). The design is yours.
    Library: ``minilooped.tensor.topological_order``.
    """
    raise NotImplementedError("ex1_4: topological_order")


def softmax_backward(g, y, axis):
    """Exercise 1.5 -- the backward of softmax, without building its Jacobian.

    Forward: ``y = softmax(x)`` along ``axis``, each slice along ``axis`` a probability
    vector, y_i = exp(x_i) / sum_j exp(x_j).
    Inputs: ``g`` = dL/dy and ``y``, arrays of the same shape; ``axis``, a non-negative
    int, the axis softmax normalised over.
    Return: dL/dx, an array of that shape.

    Derive it: write down the Jacobian dy_i/dx_j of one softmax vector, then its
    vector-Jacobian product (section 3) with g, and simplify until no matrix is left. A
    (T, T) Jacobian per vector would cost T times the memory of y: never build one. Then
    compare with autograd on softmax written as ``e / e.sum(...)`` from Tensor ops.
    Library: ``minilooped.ops.fused.softmax_backward``.
    """
    raise NotImplementedError("ex1_5: softmax_backward")
