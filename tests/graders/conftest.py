"""Grader set-up: one marker per exercise, the ``impl`` fixture, readable failures.

Every test here carries exactly one exercise marker (``@pytest.mark.ex1_2``) and gets the
implementation under test from the ``impl`` fixture: the student's stub in exercises/
by default, the library's reference solution when MINILOOPED_GRADE_TARGET=reference
(how CI proves that every grader passes on a correct solution).
"""
import pytest

from minilooped.grading import registry
from minilooped.grading.checks import failure_message


def pytest_configure(config):
    for ex in registry.EXERCISES:
        config.addinivalue_line("markers", f"{ex.id}: exercise {ex.id[2:].replace('_', '.')}, {ex.title} "
                                           f"({ex.where})")


def exercise_of(item):
    ids = [m.name for m in item.iter_markers() if m.name in registry.BY_ID]
    return registry.get(ids[0]) if len(ids) == 1 else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "graders" not in item.path.parts:
            continue
        if exercise_of(item) is None:
            raise pytest.UsageError(f"grader {item.nodeid} needs exactly one exercise marker (ex1_1, ...)")
        item.add_marker(pytest.mark.grader)


@pytest.fixture
def impl(request):
    """The student's function or class for this test's exercise (or the reference)."""
    return registry.load(exercise_of(request.node))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or report.passed or report.skipped:
        return
    ex = exercise_of(item)
    message, clean = failure_message(call.excinfo.value, ex)
    report.user_properties.append(("grade_message", message))
    if clean:  # the message is the whole story: no traceback into the grader
        report.longrepr = message
