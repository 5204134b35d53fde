"""Graders of chapter 1 (exercises/ch01_autograd.py): backward rules, unbroadcast,
batched matmul backward, topological order, softmax backward. Oracles: PyTorch autograd
in float64, finite differences, and properties of the result."""
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import minilooped as ml
import minilooped.functional as F
import minilooped.ops.elementwise
import minilooped.ops.linalg
import minilooped.ops.fused
from minilooped.grading.checks import GradingError, assert_close, check, check_gradients, grader_settings


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ ex1_1 tanh
@pytest.mark.ex1_1
def test_tanh_backward_matches_torch(impl):
    a = _rng().standard_normal((3, 5)) * 2
    g = _rng(1).standard_normal((3, 5))
    ta = torch.tensor(a, requires_grad=True)
    torch.tanh(ta).backward(torch.tensor(g))
    got = impl(g, np.tanh(a))
    assert_close(got, ta.grad, "dL/da", hint="write tanh'(a) with tanh(a) alone (tanh = sinh / cosh; "
                 "differentiate the quotient), then multiply by g")


@pytest.mark.ex1_1
def test_tanh_backward_keeps_float32(impl):
    out = np.tanh(_rng().standard_normal(4).astype(np.float32))
    got = impl(np.ones(4, dtype=np.float32), out)
    check(getattr(got, "dtype", None) == np.float32,
          f"dL/da: got dtype {getattr(got, 'dtype', type(got).__name__)}, expected float32 for float32 inputs",
          hint="multiply by Python floats (1.0), which keep the array's dtype")


@pytest.mark.ex1_1
def test_tanh_backward_inside_the_engine(impl, monkeypatch):
    # the library's tanh op calls tanh_backward: swap in yours and check the op's gradient
    monkeypatch.setattr(minilooped.ops.elementwise, "tanh_backward", impl)
    check_gradients(lambda x: x.tanh(), [_rng().standard_normal((2, 3))], "tanh op using your tanh_backward")


# ------------------------------------------------------------ ex1_2 unbroadcast
@st.composite
def broadcast_pairs(draw):
    """(shape of g, shape of the operand) with the operand broadcastable to g."""
    gshape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=4)))
    drop = draw(st.integers(0, len(gshape)))
    tail = gshape[drop:]
    ones = draw(st.lists(st.booleans(), min_size=len(tail), max_size=len(tail)))
    shape = tuple(1 if o else s for s, o in zip(tail, ones))
    return gshape, shape


def _unbroadcast_hint(g, shape):
    return (f"g {g.shape} -> operand {shape}: sum over the {g.ndim - len(shape)} extra leading axes, then "
            "with keepdims=True over the axes where the operand has size 1")


@pytest.mark.ex1_2
@grader_settings(40)
@given(broadcast_pairs())
def test_unbroadcast_random_shapes(impl, shapes):
    gshape, shape = shapes
    g = np.arange(1, 1 + int(np.prod(gshape)), dtype=np.float64).reshape(gshape)
    expected = torch.tensor(g).sum_to_size(shape) if shape else torch.tensor(g).sum()
    assert_close(impl(g, shape), expected, f"unbroadcast(g of shape {gshape}, {shape})",
                 hint=_unbroadcast_hint(g, shape))


@pytest.mark.ex1_2
def test_unbroadcast_keeps_size_one_axes(impl):
    g = _rng().standard_normal((2, 3, 4))
    assert_close(impl(g, (3, 1)), g.sum(axis=0).sum(axis=1, keepdims=True), "unbroadcast(g (2, 3, 4), (3, 1))",
                 hint="(3, 1) must stay (3, 1), not (3,): sum with keepdims=True over axes of size 1")


@pytest.mark.ex1_2
def test_unbroadcast_gradient_of_broadcasting_add(impl, monkeypatch):
    # the library's add/mul/... call unbroadcast: swap in yours and check their gradients
    import minilooped.ops._util
    monkeypatch.setattr(minilooped.ops.elementwise, "unbroadcast", impl)
    monkeypatch.setattr(minilooped.ops._util, "unbroadcast", impl)
    r = _rng()
    check_gradients(lambda a, b: a * b + b, [r.standard_normal((3, 1)), r.standard_normal((2, 1, 4))],
                    "a * b + b with a (3, 1), b (2, 1, 4), using your unbroadcast")


# --------------------------------------------------------- ex1_3 matmul backward
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    a_batch = tuple(1 if draw(st.booleans()) else s for s in batch)
    b_batch = tuple(1 if draw(st.booleans()) else s for s in batch)[draw(st.integers(0, len(batch))):]
    return a_batch + (n, k), b_batch + (k, m)


def _torch_matmul_grads(a, b, g):
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ta @ tb).backward(torch.tensor(g))
    return ta.grad, tb.grad


def _matmul_check(impl, a, b, g, what):
    got = impl(g, a, b)
    ga_t, gb_t = _torch_matmul_grads(a, b, g)
    check(isinstance(got, tuple) and len(got) == 2,
          f"{what}: return a tuple (dL/da, dL/db), got {type(got).__name__}")
    hint = (f"a {a.shape}, b {b.shape}, g {g.shape}: dL/da = g @ b^T and dL/db = a^T @ g (^T = swapaxes(-1, -2)), "
            "then unbroadcast each to its operand's shape")
    assert_close(got[0], ga_t, f"{what} dL/da", hint=hint)
    assert_close(got[1], gb_t, f"{what} dL/db", hint=hint)


@pytest.mark.ex1_3
def test_matmul_backward_2d(impl):
    r = _rng()
    a, b, g = r.standard_normal((3, 4)), r.standard_normal((4, 2)), r.standard_normal((3, 2))
    _matmul_check(impl, a, b, g, "2-D")


@pytest.mark.ex1_3
def test_matmul_backward_shared_weight(impl):
    # x (B, T, C) @ W (C, D): W is used by every batch element, so its gradient sums them
    r = _rng()
    a, b, g = r.standard_normal((2, 3, 4)), r.standard_normal((4, 5)), r.standard_normal((2, 3, 5))
    _matmul_check(impl, a, b, g, "a (2, 3, 4) @ b (4, 5)")


@pytest.mark.ex1_3
@grader_settings(30)
@given(matmul_shapes())
def test_matmul_backward_random_broadcast(impl, shapes):
    r = _rng()
    sa, sb = shapes
    a, b = r.standard_normal(sa), r.standard_normal(sb)
    g = r.standard_normal(np.broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1]))
    _matmul_check(impl, a, b, g, f"a {sa} @ b {sb}")


@pytest.mark.ex1_3
def test_matmul_backward_inside_the_engine(impl, monkeypatch):
    monkeypatch.setattr(minilooped.ops.linalg, "matmul_backward", impl)
    r = _rng()
    check_gradients(lambda a, b: a @ b, [r.standard_normal((2, 2, 3)), r.standard_normal((1, 3, 2))],
                    "the @ op using your matmul_backward")


# -------------------------------------------------------- ex1_4 topological order
def _check_order(order, root, what):
    """Properties: root first, each grad-requiring reachable tensor once, children before parents."""
    check(isinstance(order, list), f"{what}: return a list of tensors, got {type(order).__name__}")
    reachable, stack = {}, [root]
    while stack:
        t = stack.pop()
        if id(t) not in reachable:
            reachable[id(t)] = t
            stack.extend(p for p in t._parents if p.requires_grad)
    ids = [id(t) for t in order]
    check(len(ids) == len(set(ids)), f"{what}: a tensor appears more than once in the order "
          f"({len(ids)} entries, {len(set(ids))} distinct)", hint="remember visited tensors in a set of id(t)")
    missing = set(reachable) - set(ids)
    check(not missing, f"{what}: {len(missing)} of the {len(reachable)} tensors that need a gradient are missing "
          f"(e.g. one made by op {reachable[next(iter(missing))]._op!r})" if missing else "",
          hint="follow t._parents from every tensor you visit")
    extra = [t for t in order if id(t) not in reachable]
    check(not extra, f"{what}: the order contains {len(extra)} tensor(s) that do not need a gradient or are "
          "not reachable from root", hint="skip parents with requires_grad False")
    check(order[0] is root, f"{what}: the first tensor must be root (the loss), got one made by op "
          f"{order[0]._op!r}", hint="did you forget to reverse the post-order?")
    pos = {i: k for k, i in enumerate(ids)}
    for t in order:
        for p in t._parents:
            if p.requires_grad and pos[id(p)] < pos[id(t)]:
                raise GradingError(
                    f"{what}: a tensor made by op {t._op!r} (position {pos[id(t)]}) comes after its parent made "
                    f"by op {p._op or 'leaf'!r} (position {pos[id(p)]}); every tensor must come before its parents")


@pytest.mark.ex1_4
def test_topological_order_diamond(impl):
    x = ml.Tensor([1.0, 2.0], requires_grad=True)
    a, b = x * 2.0, x + 1.0
    root = (a * b + a).sum()  # x feeds two paths; a is used twice
    _check_order(impl(root), root, "diamond graph x -> (a, b) -> root")


@pytest.mark.ex1_4
def test_topological_order_skips_constants(impl):
    x = ml.Tensor(np.ones(3), requires_grad=True)
    c = ml.Tensor(np.arange(3.0)).exp()  # no gradient needed: must not be listed
    root = (x * c).sum()
    order = impl(root)
    _check_order(order, root, "x * constant")
    check(len(order) == 3, f"x * constant: expected 3 tensors (sum, mul, x), got {len(order)}",
          hint="only tensors with requires_grad=True belong to the order")


@st.composite
def random_graphs(draw):
    n_leaves = draw(st.integers(1, 3))
    steps = draw(st.lists(st.tuples(st.sampled_from(["add", "mul", "tanh", "sum0"]), st.integers(0, 99),
                                    st.integers(0, 99)), min_size=1, max_size=12))
    return n_leaves, steps


@pytest.mark.ex1_4
@grader_settings(30)
@given(random_graphs())
def test_topological_order_random_graphs(impl, graph):
    n_leaves, steps = graph
    nodes = [ml.Tensor(np.full(2, k + 1.0), requires_grad=k != 1) for k in range(n_leaves)]
    for op, i, j in steps:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        nodes.append({"add": lambda: a + b, "mul": lambda: a * b, "tanh": lambda: a.tanh(),
                      "sum0": lambda: a.sum(0, keepdim=True) + b}[op]())
    root = sum(nodes[1:], nodes[0]).sum()
    if not root.requires_grad:
        root = (root + ml.Tensor(np.zeros(1), requires_grad=True)).sum()
    _check_order(impl(root), root, f"random graph of {len(nodes)} tensors")


@pytest.mark.ex1_4
def test_topological_order_deep_chain(impl):
    x = ml.Tensor([0.5], requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0
    root = y.sum()
    try:
        order = impl(root)
    except RecursionError:
        raise GradingError("a chain of 20,000 ops: RecursionError. Python allows ~1,000 nested calls; "
                             "use an explicit stack instead of recursion") from None
    check(len(order) == 20_002, f"a chain of 20,000 ops: expected 20,002 tensors, got {len(order)}")
    check(order[0] is root and order[-1] is x, "a chain of 20,000 ops: expected root first and x last")


@pytest.mark.ex1_4
def test_backward_with_your_topological_order(impl, monkeypatch):
    # "minilooped.tensor" is also the name of a function: patch the module itself
    monkeypatch.setattr(sys.modules["minilooped.tensor"], "topological_order", impl)
    r = _rng()
    check_gradients(lambda x, w: ((x @ w).tanh() * x.sum(1, keepdim=True) + x @ w).sum(),
                    [r.standard_normal((3, 4)), r.standard_normal((4, 4))],
                    "backward() using your topological_order")


# --------------------------------------------------------- ex1_5 softmax backward
def _softmax_check(impl, x, axis, what):
    y = np.exp(x - x.max(axis=axis, keepdims=True))
    y /= y.sum(axis=axis, keepdims=True)
    g = _rng(5).standard_normal(x.shape)
    got = impl(g, y, axis)
    tx = torch.tensor(x, requires_grad=True)
    torch.softmax(tx, axis).backward(torch.tensor(g))
    assert_close(got, tx.grad, what, hint=f"dy_i/dx_j involves y_i and y_j; sum the product with g over i, "
                 f"along axis {axis} with keepdims=True so it broadcasts back")


@pytest.mark.ex1_5
def test_softmax_backward_matches_torch(impl):
    _softmax_check(impl, _rng().standard_normal((3, 5)) * 3, 1, "softmax backward of (3, 5) along axis 1")


@pytest.mark.ex1_5
def test_softmax_backward_other_axes(impl):
    x = _rng().standard_normal((2, 3, 4))
    for axis in (0, 1, 2):
        _softmax_check(impl, x, axis, f"softmax backward of (2, 3, 4) along axis {axis}")


@pytest.mark.ex1_5
@grader_settings(25)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.data())
def test_softmax_backward_random_shapes(impl, shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    x = _rng(len(shape)).standard_normal(shape) * 2
    _softmax_check(impl, x, axis, f"softmax backward of {tuple(shape)} along axis {axis}")


@pytest.mark.ex1_5
def test_softmax_backward_inside_the_engine(impl, monkeypatch):
    # random output weights (not L = sum(y), whose gradient is zero for any input)
    monkeypatch.setattr(minilooped.ops.fused, "softmax_backward", impl)
    check_gradients(lambda x: F.softmax(x, -1), [_rng().standard_normal((2, 4))],
                    "F.softmax using your softmax_backward")
