"""Checking gradients: central finite differences against the backward pass.

The tests and the exercise graders use ``gradcheck`` to ask one question of an op or a
whole model: does ``backward()`` compute the derivative of the forward function? The
answer comes with a report that says where they disagree, e.g.

    gradient of input 0 at index (1, 2): expected 0.25 (finite differences), got 0.5

How it works. A function with several outputs is turned into one scalar

    L(x) = sum_k sum(out_k(x) * w_k)        w_k fixed random weights (seeded)

so that one backward pass gives dL/dx for every input, and each component is compared
with the central difference  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),  whose error
is O(eps^2). Run it in float64: in float32 the rounding error of L, about 1e-7 |L|,
divided by 2 eps swamps the comparison.

This module never imports torch: the graders run it on machines without PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import backend
from .backend import np
from .tensor import Tensor, no_grad

EPS = 1e-6     # central-difference step (float64)
RTOL = 1e-5    # |analytic - numeric| <= ATOL + RTOL * |numeric|
ATOL = 1e-7


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the finite-difference one."""


@dataclass
class Mismatch:
    input: int          # position of the input in ``inputs``
    index: tuple        # element of that input
    expected: float     # finite differences
    got: float          # backward()

    def __str__(self) -> str:
        return (f"gradient of input {self.input} at index {self.index}: expected {self.expected:.10g} "
                f"(finite differences), got {self.got:.10g}")


@dataclass
class GradcheckReport:
    """What ``gradcheck`` found; true when every checked gradient agreed."""
    ok: bool
    checked: list = field(default_factory=list)       # positions of the inputs checked
    mismatches: list = field(default_factory=list)    # Mismatch, at most ``max_report`` kept
    n_mismatches: int = 0
    problems: list = field(default_factory=list)      # missing or mis-shaped gradients
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    projected: bool = False  # the output was not a scalar: gradients are of sum(out * w)
    eps: float = EPS
    rtol: float = RTOL
    atol: float = ATOL

    def __bool__(self) -> bool:
        return self.ok

    @property
    def message(self) -> str:
        if self.ok:
            return (f"gradcheck passed for inputs {self.checked} (max abs error {self.max_abs_err:.3g}, "
                    f"max rel error {self.max_rel_err:.3g}; rtol={self.rtol}, atol={self.atol}, eps={self.eps})")
        lines = list(self.problems) + [str(m) for m in self.mismatches]
        if self.n_mismatches > len(self.mismatches):
            lines.append(f"... and {self.n_mismatches - len(self.mismatches)} more mismatching elements")
        head = (f"gradcheck failed: backward() disagrees with finite differences "
                f"(rtol={self.rtol}, atol={self.atol}, eps={self.eps}; max abs error {self.max_abs_err:.3g})")
        if self.projected:
            head += ("\n  (the output is not a scalar, so the gradients compared are those of "
                     "L = sum(out * w) for fixed random weights w)")
        return head + "\n  " + "\n  ".join(lines)

    def __str__(self) -> str:
        return self.message


def _as_input(x):
    """Leaf float64 tensors for what will be checked; anything else passes through."""
    if isinstance(x, Tensor):
        if x.dtype.kind != "f" or not x.requires_grad:
            return x, False
        return Tensor(x.data.astype(backend.float64), requires_grad=True), True
    if isinstance(x, (list, tuple)) or hasattr(x, "__array_interface__") or hasattr(x, "__cuda_array_interface__"):
        arr = x if hasattr(x, "dtype") else np.asarray(x)
        if arr.dtype.kind == "f":
            xp = backend.array_module(arr)
            return Tensor(xp.asarray(arr, dtype=backend.float64), requires_grad=True), True
    return x, False


def _outputs(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(o).__name__}")
    return [o for o in outs if o.dtype.kind == "f"]


def gradcheck(fn, inputs, eps: float = EPS, rtol: float = RTOL, atol: float = ATOL, seed: int | None = 0,
              raise_exception: bool = True, max_report: int = 5) -> GradcheckReport:
    """Compare the gradients ``backward()`` gives with central finite differences.

    fn(*inputs) returns a Tensor or a tuple of Tensors. Inputs that are float Tensors
    with ``requires_grad=True``, or float NumPy/CuPy arrays or lists, are checked (as
    float64 copies); other inputs (ids, masks, ints, Tensors without grad) pass through
    unchanged. ``seed``: if not None, ``minilooped.manual_seed(seed)`` is called before
    every evaluation, so that a function using dropout sees one mask throughout.

    Returns a ``GradcheckReport`` (true when all agree); raises ``GradcheckError`` with
    the report's message instead when ``raise_exception`` and they disagree.
    """
    pairs = [_as_input(x) for x in inputs]
    args = [a for a, _ in pairs]
    checked = [i for i, (_, c) in enumerate(pairs) if c]
    report = GradcheckReport(ok=True, checked=checked, eps=eps, rtol=rtol, atol=atol)
    if not checked:
        raise ValueError("gradcheck: no input to check; pass float arrays or Tensors with requires_grad=True")

    def run():
        if seed is not None:
            backend.manual_seed(seed)
        return _outputs(fn(*args))

    # analytic: one backward pass of L = sum_k sum(out_k * w_k)
    outs = run()
    rng = np.random.default_rng(1234)
    weights = []
    scalar = len(outs) == 1 and outs[0].data.size == 1
    for o in outs:
        xp = backend.array_module(o.data)
        # a scalar output is its own loss (w = 1), so the report shows d out / d x itself;
        # otherwise random weights: with w = 1 a wrong backward whose errors sum to zero
        # (e.g. softmax's, since sum(softmax) = 1) would pass
        w = np.ones(o.shape) if scalar else rng.standard_normal(o.shape)
        weights.append(xp.asarray(w, dtype=o.dtype))
    report.projected = not scalar
    for i in checked:
        args[i].grad = None
    live = [(o, w) for o, w in zip(outs, weights) if o.requires_grad]
    for k, (o, w) in enumerate(live):
        o.backward(w, retain_graph=k < len(live) - 1)

    host_w = [backend.to_numpy(w).astype(np.float64) for w in weights]

    def values():
        with no_grad():
            return [backend.to_numpy(o.data).astype(np.float64) for o in run()]

    def central(plus, minus) -> float:
        # difference the outputs before weighting and summing: elements that do not depend
        # on the input (a masked_fill of -1e4, say) cancel exactly instead of leaving the
        # rounding error of a large sum, divided by 2 eps
        return float(sum(((p - m) * w).sum() for p, m, w in zip(plus, minus, host_w))) / (2 * eps)

    for i in checked:
        t = args[i]
        analytic = None if t.grad is None else backend.to_numpy(t.grad).astype(np.float64)
        if analytic is not None and analytic.shape != tuple(t.shape):
            report.problems.append(f"gradient of input {i} has shape {analytic.shape}, but the input has "
                                   f"shape {tuple(t.shape)}")
            report.ok = False
            continue
        numeric = np.zeros(t.shape, dtype=np.float64)
        for idx in np.ndindex(*t.shape):
            original = t.data[idx].copy()
            t.data[idx] = original + eps
            plus = values()
            t.data[idx] = original - eps
            minus = values()
            t.data[idx] = original
            numeric[idx] = central(plus, minus)
        if analytic is None:
            if np.any(np.abs(numeric) > atol):
                where = tuple(int(j) for j in np.argwhere(np.abs(numeric) > atol)[0])
                report.problems.append(
                    f"gradient of input {i} is missing (.grad is None after backward), but finite differences "
                    f"give {numeric[where]:.10g} at index {where}: is the input cut from the graph (detach, "
                    "no_grad, .data) or does an op's backward return None for it?")
                report.ok = False
            continue
        err = np.abs(analytic - numeric)
        report.max_abs_err = max(report.max_abs_err, float(err.max(initial=0.0)))
        rel = err / np.maximum(np.abs(numeric), atol)  # relative to atol where the gradient is ~0
        report.max_rel_err = max(report.max_rel_err, float(rel.max(initial=0.0)))
        bad = ~(err <= atol + rtol * np.abs(numeric))     # also catches nan
        if bad.any():
            report.ok = False
            report.n_mismatches += int(bad.sum())
            for idx in np.argwhere(bad):
                if len(report.mismatches) >= max_report:
                    break
                idx = tuple(int(j) for j in idx)
                report.mismatches.append(Mismatch(i, idx, float(numeric[idx]), float(analytic[idx])))
    if raise_exception and not report.ok:
        raise GradcheckError(report.message)
    return report


def assert_close(actual, expected, rtol: float = 1e-7, atol: float = 0.0, what: str = "value") -> None:
    """Raise AssertionError naming the first elements where ``actual`` and ``expected`` differ.

    Both may be Tensors, NumPy/CuPy arrays or numbers; shapes must match exactly.
    """
    a = backend.to_numpy(actual.data if isinstance(actual, Tensor) else actual)
    e = backend.to_numpy(expected.data if isinstance(expected, Tensor) else expected)
    a, e = np.asarray(a), np.asarray(e)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape}, expected {e.shape}")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    err = np.abs(a64 - e64)
    bad = ~(err <= atol + rtol * np.abs(e64))
    bad &= ~(np.isnan(a64) & np.isnan(e64))  # nan where nan is expected is a match
    if bad.any():
        lines = [f"{what} at index {tuple(int(j) for j in idx)}: expected {e64[tuple(idx)]:.10g}, "
                 f"got {a64[tuple(idx)]:.10g}" for idx in np.argwhere(bad)[:5]]
        more = int(bad.sum()) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        worst = float(np.where(np.isnan(err), np.inf, err)[bad].max())
        raise AssertionError(f"{what}: {int(bad.sum())} of {a.size} elements differ (rtol={rtol}, atol={atol}, "
                             f"max abs error {worst:.3g})\n  " + "\n  ".join(lines))
