"""Bad input fails loudly, and the message says what is wrong and how to fix it.

Each test matches the op's name, the offending shapes / dtypes / devices / keys, and
the suggested fix, so that a message cannot silently lose one of them.
"""
import numpy as np
import pytest

import minilooped as ml
import minilooped.functional as F
from minilooped import nn
from minilooped.tensor import Tensor

needs_gpu = pytest.mark.skipif(not ml.cuda_available(), reason="needs CuPy and a GPU")


def t(*shape, dtype=np.float32, grad=False):
    return ml.Tensor(np.ones(shape, dtype=dtype), requires_grad=grad)


# ------------------------------------------------------------------ shapes
def test_matmul_shape_mismatch():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned.*"
                                         r"\(3\).*\(4\).*transpose an operand"):
        t(2, 3) @ t(4, 5)


def test_matmul_batch_dims_mismatch():
    with pytest.raises(ValueError, match=r"matmul: batch dims of \(2, 3, 4\) and \(3, 4, 5\) cannot be "
                                         r"broadcast.*equal or 1"):
        t(2, 3, 4) @ t(3, 4, 5)


def test_matmul_needs_two_dims():
    with pytest.raises(ValueError, match=r"matmul: .*\(3,\) and \(3, 2\); reshape a vector"):
        t(3) @ t(3, 2)


@pytest.mark.parametrize("op,fn", [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
                                   ("mul", lambda a, b: a * b), ("div", lambda a, b: a / b),
                                   ("pow", lambda a, b: a ** b)])
def test_broadcasting_mismatch(op, fn):
    with pytest.raises(ValueError, match=rf"{op}: shapes \(2, 3\) and \(4,\) cannot be broadcast together"
                                         r".*reshape or unsqueeze"):
        fn(t(2, 3), t(4))


def test_where_broadcasting_mismatch():
    with pytest.raises(ValueError, match=r"where: condition \(3,\), a \(2,\) and b \(3,\) cannot be broadcast"
                                         r".*reshape or unsqueeze"):
        ml.where(np.ones(3, bool), t(2), t(3))


def test_masked_fill_mask_must_broadcast_to_the_tensor():
    with pytest.raises(ValueError, match=r"masked_fill: mask of shape \(4,\) does not broadcast to .*\(3,\)"):
        t(3).masked_fill(np.ones(4, bool), 0.0)
    with pytest.raises(ValueError, match=r"masked_fill: mask of shape \(2, 3\) would enlarge .*\(3,\)"):
        t(3).masked_fill(np.ones((2, 3), bool), 0.0)


def test_linear_feature_mismatch():
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 3\) has 3 features but the weight of "
                                         r"shape \(4, 5\) expects 5 \(weight is \(out, in\)\)"):
        F.linear(t(2, 3), t(4, 5))
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 3\)"):
        nn.Linear(5, 4)(t(2, 3))
    with pytest.raises(ValueError, match=r"linear: weight must be 2-D \(out_features, in_features\), got shape \(3,\)"):
        F.linear(t(2, 3), t(3))


def test_reshape_wrong_size():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) "
                                         r"into \(4, 2\).*same number of elements"):
        t(2, 3).reshape(4, 2)


def test_dim_out_of_range():
    with pytest.raises(IndexError, match=r"sum: dim 5 is out of range for a tensor with 2 dimensions; "
                                         r"use a dim in \[-2, 1\]"):
        t(2, 3).sum(5)
    with pytest.raises(IndexError, match=r"softmax: dim -3 is out of range"):
        F.softmax(t(2, 3), -3)


def test_cat_stack_split_permute_shapes():
    with pytest.raises(ValueError, match=r"cat: shapes \(2, 3\) and \(2, 4\) differ outside dim 0.*same shape "
                                         r"except along the joined dimension"):
        ml.cat([t(2, 3), t(2, 4)])
    with pytest.raises(ValueError, match=r"stack: all tensors must have one shape, got \(2, 3\) and \(3, 2\); "
                                         r".*use cat"):
        ml.stack([t(2, 3), t(3, 2)])
    with pytest.raises(ValueError, match=r"split: sizes \[1, 2\] add up to 3, but dim 0 of shape \(4, 3\) has "
                                         r"size 4; give sizes that add up to 4"):
        t(4, 3).split([1, 2])
    with pytest.raises(ValueError, match=r"permute: \(0, 0\) is not a permutation .*shape \(2, 3\); name each "
                                         r"dim 0..1 exactly once"):
        t(2, 3).permute(0, 0)


def test_index_out_of_bounds_names_the_shape():
    with pytest.raises(IndexError, match=r"indexing a tensor of shape \(2, 3\): index 5 is out of bounds"):
        t(2, 3)[5]


def test_layer_norm_shape_mismatch():
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(4,\) does not match the last dims "
                                         r"of the input of shape \(2, 3\)"):
        F.layer_norm(t(2, 3), (4,))


def test_attention_shapes():
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: q \(2, 3\), k \(2, 4\), v \(2, 4\) do "
                                         r"not fit: q and k need the same last dim"):
        F.scaled_dot_product_attention(t(2, 3), t(2, 4), t(2, 4))


# ---------------------------------------------------------------- backward
def test_backward_on_non_scalar_without_gradient():
    y = t(2, 3, grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"backward\(\) on a tensor of shape \(2, 3\) needs a gradient of the "
                                           r"same shape: reduce it to a scalar first \(e.g. loss.sum\(\)"):
        y.backward()


def test_backward_gradient_of_wrong_shape():
    y = t(2, grad=True) * 2.0
    with pytest.raises(ValueError, match=r"backward\(grad\): grad has shape \(3,\) but the tensor has shape "
                                         r"\(2,\); pass a gradient of the tensor's shape"):
        y.backward(np.ones(3, np.float32))


def test_backward_twice_through_a_freed_graph():
    x = t(3, grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time: .*op 'sum'.*freed.*"
                                           r"backward\(retain_graph=True\) the first time"):
        loss.backward()
    # a new loss sharing a freed part of the graph fails in the shared op
    h = x.exp()
    (h * 2.0).sum().backward()
    with pytest.raises(RuntimeError, match=r"second time: .*op 'exp'.*freed"):
        (h * 3.0).sum().backward()


def test_backward_on_a_tensor_without_graph():
    with pytest.raises(RuntimeError, match=r"backward\(\): this tensor does not require grad.*"
                                           r"requires_grad=True.*no_grad\(\)"):
        (t(3) * 2.0).sum().backward()


def test_requires_grad_on_an_integer_tensor():
    with pytest.raises(TypeError, match=r"only floating-point tensors can require gradients, got dtype int64; "
                                        r"pass float data, e.g. Tensor\(x, dtype='float32'"):
        ml.Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match=r"only floating-point tensors can require gradients, got int64"):
        ml.arange(3).requires_grad_()


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("op,fn", [
    ("add", lambda a, b: a + b), ("mul", lambda a, b: a * b), ("div", lambda a, b: b / a),
    ("matmul", lambda a, b: a.reshape(1, 3) @ b.reshape(3, 1)), ("cat", lambda a, b: ml.cat([a, b])),
    ("stack", lambda a, b: ml.stack([a, b])), ("where", lambda a, b: ml.where(np.ones(3, bool), a, b)),
    ("linear", lambda a, b: F.linear(a, b.reshape(1, 3))),
    ("scaled_dot_product_attention", lambda a, b: F.scaled_dot_product_attention(
        a.reshape(1, 3), b.reshape(1, 3), b.reshape(1, 3))),
])
def test_mixed_float32_and_float64(op, fn):
    a, b = t(3), t(3, dtype=np.float64)
    with pytest.raises(TypeError, match=rf"{op}: mixed dtypes float(32|64) and float(32|64); cast one of them, "
                                        r"e.g. x.to\('float(32|64)'\) \(or .float\(\) / .double\(\)\)"):
        fn(a, b)


def test_mixed_dtypes_with_a_numpy_array():
    with pytest.raises(TypeError, match=r"add: mixed dtypes float32 and float64"):
        t(3) + np.ones(3)


def test_layer_norm_weight_of_another_dtype():
    with pytest.raises(TypeError, match=r"layer_norm: mixed dtypes float32 and float64"):
        F.layer_norm(t(2, 3), (3,), t(3, dtype=np.float64))


def test_unknown_device_or_dtype():
    with pytest.raises(ValueError, match=r"to\('tpu'\): not a device nor a dtype; use a device \('cpu', 'cuda'\)"):
        t(3).to("tpu")
    with pytest.raises(ValueError, match=r"to\('tpu'\)"):
        nn.Linear(2, 2).to("tpu")


# ----------------------------------------------------------------- devices
class _FakeGPUArray(np.ndarray):
    """A NumPy array that the patched Tensor.device below reports as living on 'cuda'."""


def _fake_device(monkeypatch):
    monkeypatch.setattr(Tensor, "device", property(lambda self: "cuda" if isinstance(self.data, _FakeGPUArray)
                                                   else "cpu"))
    fake = ml.Tensor(np.ones(3, np.float32))
    fake.data = fake.data.view(_FakeGPUArray)  # set after construction: asarray() drops subclasses
    return fake


@pytest.mark.parametrize("op,fn", [
    ("add", lambda g, c: g + c), ("mul", lambda g, c: c * g),
    ("matmul", lambda g, c: g.reshape(1, 3) @ c.reshape(3, 1)),
    ("cat", lambda g, c: ml.cat([g, c])), ("where", lambda g, c: ml.where(np.ones(3, bool), g, c)),
    ("linear", lambda g, c: F.linear(c, g.reshape(1, 3))),
])
def test_device_check_names_both_devices_and_the_fix(monkeypatch, op, fn):
    """The device check, without a GPU: Tensor.device is patched to call one array 'cuda'."""
    gpu = _fake_device(monkeypatch)
    cpu = t(3)
    assert gpu.device == "cuda" and cpu.device == "cpu"
    with pytest.raises(RuntimeError, match=rf"{op}: operands are on different devices \((cuda and cpu|cpu and "
                                           r"cuda)\); move one with .to\('(cpu|cuda)'\) or .to\('(cpu|cuda)'\) first"):
        fn(gpu, cpu)


@pytest.mark.gpu
@needs_gpu
def test_cupy_tensor_meets_numpy_tensor():
    gpu, cpu = t(3).to("cuda"), t(3)
    assert gpu.device == "cuda"
    with pytest.raises(RuntimeError, match=r"add: operands are on different devices \(cuda and cpu\); move one "
                                           r"with .to\('cuda'\) or .to\('cpu'\) first"):
        gpu + cpu
    with pytest.raises(RuntimeError, match=r"matmul: operands are on different devices"):
        cpu.reshape(1, 3) @ gpu.reshape(3, 1)


@pytest.mark.skipif(ml.cuda_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_how_to_get_one():
    with pytest.raises(ml.backend.DeviceError, match=r"device 'cuda' needs CuPy and an NVIDIA GPU.*pip install "
                                                     r"-e \"\.\[gpu\]\".*or keep the tensor on device 'cpu'"):
        t(3).to("cuda")


# -------------------------------------------------------------- nn inputs
def test_cross_entropy_target_out_of_range():
    with pytest.raises(IndexError, match=r"cross_entropy: target id 3 is out of range for 3 classes; targets must "
                                         r"be in \[0, 3\) or equal ignore_index=-100"):
        F.cross_entropy(t(2, 3), np.array([0, 3]))
    with pytest.raises(IndexError, match=r"cross_entropy: target id -2 is out of range"):
        F.cross_entropy(t(2, 3), np.array([0, -2]))
    # ignored entries may hold any value
    F.cross_entropy(t(2, 3), np.array([0, -100]))


def test_cross_entropy_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"cross_entropy: expected logits \(N, C\) and targets \(N,\), got logits "
                                         r"\(2, 3, 4\) and targets \(2,\).*logits.view\(-1, logits.size\(-1\)\)"):
        F.cross_entropy(t(2, 3, 4), np.zeros(2, int))
    with pytest.raises(TypeError, match=r"cross_entropy: targets must be integer class ids, got dtype float64"):
        F.cross_entropy(t(2, 3), np.zeros(2))
    with pytest.raises(ValueError, match=r"cross_entropy: reduction must be 'mean', 'sum' or 'none'"):
        F.cross_entropy(t(2, 3), np.zeros(2, int), reduction="avg")


def test_embedding_id_out_of_range():
    with pytest.raises(IndexError, match=r"embedding: id 7 is out of range for a table of 5 rows; ids must be in "
                                         r"\[0, 5\).*vocab_size"):
        F.embedding(np.array([0, 7]), t(5, 2))
    with pytest.raises(IndexError, match=r"embedding: id -1 is out of range"):
        nn.Embedding(5, 2)(np.array([-1]))
    with pytest.raises(TypeError, match=r"embedding: ids must be integers, got dtype float64"):
        F.embedding(np.array([0.0]), t(5, 2))


def test_gelu_exact_form_is_not_implemented():
    with pytest.raises(NotImplementedError, match=r"gelu\(approximate='none'\).*use approximate='tanh'"):
        F.gelu(t(2), approximate="none")


def test_dropout_probability_out_of_range():
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        F.dropout(t(2), 1.5)
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\], got -0.1"):
        nn.Dropout(-0.1)


# ------------------------------------------------------------ state dicts
class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(3, 1, bias=False)


def test_load_state_dict_missing_unexpected_and_misshaped_keys():
    m = Two()
    sd = dict(m.state_dict())
    del sd["a.bias"]
    sd["c.weight"] = np.zeros(1)
    sd["b.weight"] = np.zeros((2, 3), np.float32)
    with pytest.raises(RuntimeError, match=r"(?s)load_state_dict into Two failed:\n  missing keys: a.bias\n  "
                                           r"unexpected keys: c.weight\n  shape mismatch: b.weight: checkpoint "
                                           r"\(2, 3\) vs model \(1, 3\).*build the model from the checkpoint's "
                                           r"config, or pass strict=False"):
        m.load_state_dict(sd)


def test_load_state_dict_error_is_also_a_key_error_and_prints_plainly():
    m = Two()
    with pytest.raises(KeyError) as info:
        m.load_state_dict({})
    assert str(info.value).startswith("load_state_dict into Two failed:\n  missing keys: a.weight, a.bias, b.weight")


def test_load_state_dict_strict_false_still_refuses_wrong_shapes():
    m = Two()
    missing, unexpected = m.load_state_dict({"a.weight": np.zeros((3, 2)), "zzz": np.zeros(1)}, strict=False)
    assert missing == ["a.bias", "b.weight"] and unexpected == ["zzz"]
    with pytest.raises(RuntimeError, match=r"shape mismatch: a.weight: checkpoint \(2, 2\) vs model \(3, 2\)"):
        m.load_state_dict({"a.weight": np.zeros((2, 2))}, strict=False)


def test_module_attribute_before_init():
    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(RuntimeError, match=r"cannot assign 'w' before Module.__init__\(\) ran: call "
                                           r"super\(\).__init__\(\) first"):
        Forgot()


# ------------------------------------------------------------------- misc
def test_item_and_bool_of_many_elements():
    with pytest.raises(ValueError, match=r"item\(\) needs a tensor with one element, this one has shape \(2,\)"):
        t(2).item()
    with pytest.raises(ValueError, match=r"truth value of a tensor with more than one element is ambiguous"):
        bool(t(2))


def test_optimizer_arguments():
    with pytest.raises(ValueError, match=r"SGD got an empty parameter list: pass model.parameters\(\)"):
        ml.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"AdamW can only optimise tensors that require grad"):
        ml.optim.AdamW([t(2)])
    with pytest.raises(ValueError, match=r"SGD: Nesterov momentum needs momentum > 0 and dampening = 0"):
        ml.optim.SGD([t(2, grad=True)], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"AdamW: betas must be in \[0, 1\)"):
        ml.optim.AdamW([t(2, grad=True)], betas=(0.9, 1.0))
    p = t(2, grad=True)
    with pytest.raises(ValueError, match=r"a parameter appears in more than one parameter group"):
        ml.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_optimizer_state_dict_for_another_model():
    opt = ml.optim.AdamW([t(2, grad=True)])
    other = ml.optim.AdamW([t(2, grad=True), t(3, grad=True)])
    with pytest.raises(ValueError, match=r"optimizer state_dict does not fit: its parameter groups have different "
                                         r"sizes.*saved for another model"):
        opt.load_state_dict(other.state_dict())
