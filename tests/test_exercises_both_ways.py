"""No grader can pass vacuously: every grader passes on the reference solutions and fails
on the untouched stubs, through the real command, ``python -m minilooped.grade``.

Also: every exercise's stub has exactly its reference's signature (the reference
solutions are the library itself), and says NotImplementedError until it is filled in.
"""
import inspect
import json
import subprocess
import sys

import pytest

from minilooped.grading import registry

ROOT = registry.repo_root()


@pytest.fixture(scope="module")
def reports():
    """``grade --json`` on both targets, the two processes side by side (one per core)."""
    procs = {target: subprocess.Popen([sys.executable, "-m", "minilooped.grade", "--target", target, "--json"],
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for target in registry.TARGETS}
    out = {}
    for target, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"grade --target {target} failed (exit {proc.returncode}):\n{stderr[-3000:]}"
        out[target] = json.loads(stdout)
    return out


def test_every_grader_passes_on_the_reference_solutions(reports):
    report = reports["reference"]
    failed = [(e["id"], e["message"]) for e in report["exercises"] if not e["passed"]]
    assert not failed, f"graders failing on the library's own solutions: {failed}"
    assert report["score"] == report["max_score"] == sum(ex.points for ex in registry.EXERCISES)
    assert {e["id"] for e in report["exercises"]} == {ex.id for ex in registry.EXERCISES}


def test_every_grader_fails_on_the_untouched_stubs(reports):
    report = reports["student"]
    assert report["score"] == 0
    assert {e["id"] for e in report["exercises"]} == {ex.id for ex in registry.EXERCISES}
    for e in report["exercises"]:
        assert not e["passed"] and e["score"] == 0, f"{e['id']} passes on its stub"
        assert e["message"].startswith(f"{e['id']} is not implemented yet: fill in exercises/"), e["message"]
    passing = [t["nodeid"] for t in report["tests"] if t["outcome"] != "failed"]
    assert not passing, f"grader tests that do not fail on the stubs (they would pass vacuously): {passing}"


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("exercise", registry.EXERCISES, ids=lambda ex: ex.id)
def test_stub_has_the_reference_signature(exercise):
    stub, ref = registry.load(exercise, "student"), registry.load(exercise, "reference")
    if inspect.isclass(ref):
        assert inspect.isclass(stub) and issubclass(stub, ref), \
            f"{exercise.where} must subclass the library's {exercise.reference} (it keeps the rest of the class)"
        own = [name for name, member in vars(stub).items() if inspect.isfunction(member)]
        assert own, f"{exercise.where} overrides no method: nothing to write"
        for name in own:
            assert _params(getattr(stub, name)) == _params(getattr(ref, name)), \
                f"{exercise.where}.{name} must have the signature of {exercise.reference}.{name}"
    else:
        assert _params(stub) == _params(ref), f"{exercise.where} must have the signature of {exercise.reference}"
    title = f"Exercise {exercise.id[2:].replace('_', '.')} --"
    assert title in (inspect.getdoc(stub) or ""), f"{exercise.where}: the docstring must start with {title!r}"
