"""The autograd engine itself: how gradients flow, accumulate and stop.

The op-by-op checks are in test_ops.py; these tests are about the graph: accumulation
over backward calls, broadcasting, no_grad and detach, retained graphs, tensors used
twice, deep graphs, and dtypes kept float32 end to end.
"""
import numpy as np
import pytest
import torch

import minilooped as ml
import minilooped.functional as F
from minilooped.testing import GradcheckError, assert_close, gradcheck


def leaf(shape, seed=0, dtype=np.float64):
    return ml.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=True)


def test_gradients_accumulate_across_backward_calls():
    x = leaf((3,))
    (x * 2.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2.0 + 2 * x.data, rtol=1e-15)
    x.zero_grad()
    assert x.grad is None


def test_broadcast_operand_gradient_is_reduced_to_its_shape():
    a, b, c = leaf((4, 1, 3)), leaf((5, 1), 1), leaf((), 2)
    ((a + b) * c).sum().backward()
    assert a.grad.shape == (4, 1, 3) and b.grad.shape == (5, 1) and c.grad.shape == ()
    # every element of b meets 4 * 3 elements of a
    np.testing.assert_allclose(b.grad, np.full((5, 1), 12 * c.data), rtol=1e-14)
    np.testing.assert_allclose(a.grad, np.full((4, 1, 3), 5 * c.data), rtol=1e-14)
    np.testing.assert_allclose(c.grad, (a.data + b.data).sum(), rtol=1e-12)


def test_no_grad_records_nothing():
    x = leaf((3,))
    with ml.no_grad():
        assert not ml.is_grad_enabled()
        y = (x * x).exp().sum()
        with ml.enable_grad():
            z = (x * 3.0).sum()
    assert ml.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._backward is None
    assert z.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with ml.no_grad():
            1 / 0
    assert ml.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = leaf((3,))
    y = x * 2.0
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.data, y.data)  # the same values, no copy
    (d * x).sum().backward()                 # gradient reaches x only through the second factor
    np.testing.assert_allclose(x.grad, 2.0 * x.data, rtol=1e-15)


def test_retain_graph_allows_a_second_backward():
    x = leaf((3,))
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first, rtol=1e-15)


def test_backward_frees_the_graph_by_default():
    x = leaf((3,))
    h = x.tanh()
    loss = (h * h).sum()
    loss.backward()
    assert loss._backward is None and h._backward is None  # activations released


def test_shared_tensor_in_two_branches_sums_gradients():
    x = leaf((4,))
    h = x * 3.0                      # used by two branches
    loss = (h.exp() + h * h).sum()   # d/dh = e^h + 2h, times 3
    loss.backward()
    np.testing.assert_allclose(x.grad, 3 * (np.exp(3 * x.data) + 2 * 3 * x.data), rtol=1e-13)


def test_same_tensor_twice_in_one_op():
    x = leaf((2, 2))
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data, rtol=1e-15)
    x.zero_grad()
    (x @ x).sum().backward()
    t = torch.tensor(x.data, requires_grad=True)
    (t @ t).sum().backward()
    np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-12)


def test_diamond_graph_matches_torch():
    x = leaf((3, 4))
    a = x.tanh()
    b = a * x
    c = F.softmax(a, -1) + b.sigmoid()
    (c * b).mean().backward()
    t = torch.tensor(x.data, requires_grad=True)
    ta = t.tanh()
    tb = ta * t
    tc = torch.softmax(ta, -1) + tb.sigmoid()
    (tc * tb).mean().backward()
    assert_close(x.grad, t.grad.numpy(), 1e-12, 1e-14, what="grad")


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = leaf((2,))
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001 ** 5000), rtol=1e-10)


def test_retain_grad_keeps_intermediate_gradients():
    x = leaf((3,))
    h = (x * 2.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data, rtol=1e-15)
    np.testing.assert_allclose(x.grad, 4 * h.data, rtol=1e-15)


def test_only_leaves_receive_grad_by_default():
    x = leaf((3,))
    h = x * 2.0
    h.sum().backward()
    assert h.grad is None and x.grad is not None


def test_backward_with_explicit_gradient():
    x = leaf((2, 3))
    y = x * 3.0
    g = np.arange(6.0).reshape(2, 3)
    y.backward(g)
    np.testing.assert_allclose(x.grad, 3 * g)
    x.zero_grad()
    (x * 3.0).backward(ml.Tensor(g))  # a Tensor works too
    np.testing.assert_allclose(x.grad, 3 * g)


def test_grad_is_a_private_copy():
    """Editing one .grad (clipping in place, say) must not change another's."""
    a, b = leaf((3,)), leaf((3,), 1)
    (a + b).sum().backward()
    a.grad *= 0.0
    np.testing.assert_array_equal(b.grad, np.ones(3))


def test_inputs_without_requires_grad_get_no_grad():
    x, c = leaf((3,)), ml.Tensor(np.ones(3))
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_leaf_backward_on_itself():
    x = ml.Tensor(np.array(2.0), requires_grad=True)
    x.backward()
    assert x.grad == 1.0


def test_float32_stays_float32_end_to_end():
    """A small float32 MLP with every kind of op: values and gradients stay float32."""
    ml.manual_seed(0)
    x = ml.randn(4, 5)
    lin, ln = ml.nn.Linear(5, 6), ml.nn.LayerNorm(6)
    h = F.gelu(ln(lin(x)))
    h = F.dropout(h, 0.1) + 1.0
    h = (h * 2 - 1) / 3 + h.exp().log() + h.sigmoid() ** 2 + h.abs().sqrt()
    att = F.scaled_dot_product_attention(h.reshape(1, 4, 6), h.reshape(1, 4, 6), h.reshape(1, 4, 6), is_causal=True)
    logits = att.reshape(4, 6) + F.rms_norm(h, (6,)) + F.softplus(h) + F.relu(h).tanh()
    loss = F.cross_entropy(logits, np.array([0, 1, 2, 3])) + h.var(0).mean() + h.max(-1).sum() * 0.01
    assert loss.dtype == ml.float32
    loss.backward()
    for name, p in list(lin.named_parameters()) + list(ln.named_parameters()):
        assert p.grad.dtype == ml.float32, name


def test_python_numbers_do_not_upcast_float32():
    x = ml.Tensor([1.0, 2.0])
    assert x.dtype == ml.float32
    for y in (x + 1, 1 + x, x * 2.5, 2.5 * x, x / 3, 3 / x, x - 1, 1 - x, x ** 2, 2 ** x, -x):
        assert y.dtype == ml.float32


def test_integer_operands_take_the_float_dtype_as_in_torch():
    """NumPy would make int64 with float32 float64; torch (and we) keep float32."""
    x = ml.Tensor([1.0, 2.0])
    ids = ml.arange(2)
    mask = ml.Tensor(np.array([True, False]))
    for y in (x * ids, ids * x, x + mask, mask * x, ids * 0.5, x ** ids, ml.where(mask.data, ids, x)):
        assert y.dtype == ml.float32, y


def test_numpy_array_on_the_left_calls_the_tensor_operator():
    x = ml.Tensor(np.ones(3), requires_grad=True)
    y = np.arange(3.0) * x
    assert isinstance(y, ml.Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(3.0))


def test_tensor_helper_copies_and_tensor_wraps():
    a = np.ones(3)
    t = ml.tensor(a)
    a[0] = 5.0
    assert t.data[0] == 1.0
    assert ml.Tensor([1, 2]).dtype.kind == "i"   # Python ints stay integers
    assert ml.Tensor(np.ones(2)).dtype == ml.float64


def test_basic_tensor_attributes():
    x = ml.Tensor(np.arange(6.0).reshape(2, 3))
    assert x.shape == (2, 3) and x.ndim == 2 and x.size() == (2, 3) and x.size(1) == 3
    assert x.numel() == 6 and len(x) == 2 and x.device == "cpu"
    assert x[1, 2].item() == 5.0 and x.tolist()[1] == [3.0, 4.0, 5.0]
    assert x.T.shape == (3, 2)
    assert "tensor(" in repr(x)


def test_gradcheck_reports_wrong_gradients_clearly():
    """minilooped.testing.gradcheck, as the graders use it: the message names the input,
    the index, the finite-difference value and the backward value."""
    from minilooped.tensor import Tensor

    def half_square(a):  # forward a^2, but backward says a (should be 2a)
        return Tensor._make(a.data ** 2, (a,), lambda g: (g * a.data,), "half_square")

    with pytest.raises(GradcheckError, match=r"gradient of input 0 at index \(0, 1\): expected 1 "
                                             r"\(finite differences\), got 0.5"):
        gradcheck(lambda a: half_square(a).sum(), [np.array([[0.25, 0.5]])])
    report = gradcheck(lambda a: half_square(a).sum(), [np.array([[0.25, 0.5]])], raise_exception=False)
    assert not report and report.n_mismatches == 2
    assert gradcheck(lambda a, b: (a * b).sum(-1), [np.ones((2, 3)), np.arange(3.0)])


def test_gradcheck_reports_a_missing_gradient():
    with pytest.raises(GradcheckError, match="gradient of input 1 is missing"):
        gradcheck(lambda a, b: a * b.detach(), [np.ones(3), np.arange(3.0)])


def test_testing_module_never_imports_torch():
    """The graders run minilooped.testing on machines without PyTorch."""
    import ast
    import pathlib

    import minilooped.testing

    tree = ast.parse(pathlib.Path(minilooped.testing.__file__).read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m == "torch" or m.startswith("torch.")]
