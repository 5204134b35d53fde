"""Checks for the graders, whose failures tell the student what is wrong.

A bare ``assert`` says "AssertionError"; these say which element, what was expected,
what came back, and give a hint, e.g.

    dx at index (1, 2): expected 0.25, got 0.75 -- 3 of 24 elements differ (rtol=1e-06, atol=1e-08, ...)
      dx at index (1, 3): expected -0.5, got 0.5
      hint: the mean over the normalised axes must keep its dims (keepdims=True)

``failure_message`` turns whatever a grader raised into the one message the grade table
shows: "ex1_2 is not implemented yet: fill in exercises/ch01_autograd.py::unbroadcast"
for an untouched stub, the error and the line of the student's file for a crash.
"""
from __future__ import annotations

import traceback
from pathlib import Path

from .. import backend
from ..backend import np
from ..tensor import Tensor
from ..testing import GradcheckError, assert_close as _assert_close, gradcheck
from .registry import Exercise, ExerciseImportError, repo_root


class GradingError(AssertionError):
    """A grader's verdict: the student's result is wrong, and how."""


def _with_hint(message: str, hint: str | None) -> str:
    return f"{message}\n  hint: {hint}" if hint else message


def to_numpy(x):
    """Tensors, NumPy/CuPy arrays, torch tensors, numbers and lists -> a NumPy array."""
    if isinstance(x, Tensor):
        x = x.data
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(backend.to_numpy(x) if hasattr(x, "shape") else x)


def assert_close(got, expected, name: str, hint: str | None = None, rtol: float = 1e-6,
                 atol: float = 1e-8) -> None:
    """``got`` must be an array (or Tensor) of ``expected``'s shape and values, within
    ``atol + rtol * |expected|``; the failure names the first elements that differ."""
    if got is None:
        raise GradingError(_with_hint(f"{name}: got None, expected an array of shape "
                                      f"{tuple(to_numpy(expected).shape)} (did you forget to return it?)", hint))
    if isinstance(got, tuple) and not isinstance(expected, tuple):
        raise GradingError(_with_hint(f"{name}: got a tuple of {len(got)}, expected one array", hint))
    e = to_numpy(expected)
    try:
        g = to_numpy(got)
    except Exception:
        raise GradingError(_with_hint(f"{name}: got a {type(got).__name__}, expected an array", hint)) from None
    if g.shape != e.shape:
        raise GradingError(_with_hint(f"{name}: got shape {g.shape}, expected shape {e.shape}", hint))
    if g.dtype.kind not in "fiub":
        raise GradingError(_with_hint(f"{name}: got dtype {g.dtype}, expected numbers ({e.dtype})", hint))
    try:
        _assert_close(g, e, rtol=rtol, atol=atol, what=name)
    except AssertionError as err:
        # lead with the first wrong element: "x at index (0, 1): expected 1, got 2 -- 3 of 8 elements differ ..."
        head, *rest = str(err).splitlines()
        if rest:
            head = f"{rest.pop(0).strip()} -- {head.removeprefix(name + ': ')}"
        raise GradingError(_with_hint("\n".join([head, *rest]), hint)) from None


def assert_equal(got, expected, name: str, hint: str | None = None) -> None:
    """Exact equality of numbers, lists, dicts and integer arrays; the failure shows the
    first position (or key) that differs."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            raise GradingError(_with_hint(f"{name}: got a {type(got).__name__}, expected a dict", hint))
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        wrong = [k for k in expected if k in got and got[k] != expected[k]]
        if missing or extra or wrong:
            parts = []
            if wrong:
                k = wrong[0]
                parts.append(f"at key {k!r} got {got[k]!r}, expected {expected[k]!r} "
                             f"({len(wrong)} wrong value{'s' if len(wrong) > 1 else ''})")
            if missing:
                parts.append(f"missing key {missing[0]!r} ({len(missing)} missing)")
            if extra:
                parts.append(f"unexpected key {extra[0]!r} ({len(extra)} unexpected)")
            raise GradingError(_with_hint(f"{name}: " + "; ".join(parts), hint))
        return
    if isinstance(expected, (list, tuple)) or hasattr(expected, "shape"):
        e = to_numpy(expected)
        try:
            g = to_numpy(got)
        except Exception:
            raise GradingError(_with_hint(f"{name}: got a {type(got).__name__}, expected {type(expected).__name__}",
                                          hint)) from None
        if g.shape != e.shape:
            raise GradingError(_with_hint(f"{name}: got shape {g.shape} ({_preview(g)}), "
                                          f"expected shape {e.shape} ({_preview(e)})", hint))
        bad = np.argwhere(g != e)
        if len(bad):
            idx = tuple(int(i) for i in bad[0])
            where = idx[0] if len(idx) == 1 else idx
            raise GradingError(_with_hint(
                f"{name}: {len(bad)} of {e.size} elements differ; first at index {where}: "
                f"expected {e[idx].item()!r}, got {g[idx].item()!r} (expected {_preview(e)}, got {_preview(g)})",
                hint))
        return
    if got != expected:
        raise GradingError(_with_hint(f"{name}: expected {expected!r}, got {got!r}", hint))


def _preview(a, n: int = 12) -> str:
    flat = a.reshape(-1).tolist()
    return str(flat[:n])[:-1] + (", ...]" if len(flat) > n else "]")


def check(condition: bool, message: str, hint: str | None = None) -> None:
    """Fail with ``message`` (and the hint) unless ``condition``."""
    if not condition:
        raise GradingError(_with_hint(message, hint))


def grader_settings(max_examples: int = 25):
    """Hypothesis settings for graders: few, reproducible examples and no example database
    (a student's clone stays clean and every run grades the same inputs)."""
    from hypothesis import HealthCheck, Phase, settings

    # no "explain" phase: it re-runs failing examples many times to annotate lines
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def check_gradients(fn, inputs, name: str, hint: str | None = None, **kwargs) -> None:
    """``backward()`` through ``fn(*inputs)`` must match central finite differences
    (float64, see minilooped.testing.gradcheck)."""
    try:
        gradcheck(fn, inputs, **kwargs)
    except GradcheckError as err:
        raise GradingError(_with_hint(f"{name}: {err}", hint)) from None
    except (GradingError, NotImplementedError):
        raise
    except Exception as err:  # e.g. a gradient of the wrong shape, found deep in backward()
        raise GradingError(_with_hint(f"{name}: the forward or backward pass raised {type(err).__name__}: {err}"
                                      f"{_student_line(err)}", hint)) from err


# ------------------------------------------------------------------ failure messages
def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside exception groups (hypothesis may raise one)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _student_line(exc: BaseException) -> str:
    """' (at exercises/ch01_autograd.py:42)' for the last frame in the exercises, or ''."""
    root = repo_root() / "exercises"
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if root in path.parents:
            where = f" (at {path.relative_to(root.parent).as_posix()}:{frame.lineno})"
    return where


def failure_message(exc: BaseException, exercise: Exercise | None) -> tuple[str, bool]:
    """(message, clean) for a failed grader test; ``clean`` means the message says all
    there is to say and a traceback would only be noise."""
    exc = _leaf(exc)
    if isinstance(exc, NotImplementedError) and exercise is not None:
        return f"{exercise.id} is not implemented yet: fill in {exercise.where}", True
    if isinstance(exc, ExerciseImportError):
        return str(exc), True
    if isinstance(exc, GradingError):
        notes = getattr(exc, "__notes__", [])  # hypothesis: "Falsifying example: ..."
        return "\n".join([str(exc), *notes]), True
    text = str(exc).strip()
    return f"{type(exc).__name__}{': ' + text if text else ''}{_student_line(exc)}", False
