"""A pytest plugin for ``python -m minilooped.grade``: one record per grader test.

Loaded with ``-p minilooped.grading.collector``; writes a JSON list of
{"nodeid", "exercise", "outcome", "message"} to the file named by
MINILOOPED_GRADE_REPORT when the session ends. A test counts once, in the first phase
that did not pass (set-up, call or tear-down).
"""
from __future__ import annotations

import json
import os

from . import registry

REPORT_ENV = "MINILOOPED_GRADE_REPORT"

_results: dict[str, dict] = {}
_errors: list[str] = []


def pytest_runtest_logreport(report):
    record = _results.get(report.nodeid)
    if report.passed:
        if report.when == "call" and record is None:
            _results[report.nodeid] = _record(report, "passed", "")
        return
    if record is not None and record["outcome"] != "passed":
        return  # keep the first problem (a failing call, not the tear-down after it)
    message = dict(report.user_properties).get("grade_message")
    if message is None and report.skipped and isinstance(report.longrepr, tuple):
        message = report.longrepr[2]  # (file, line, "Skipped: reason")
    elif message is None:  # an error outside the graders' own checks
        text = report.longreprtext.strip()
        message = text.splitlines()[-1] if text else report.outcome
    _results[report.nodeid] = _record(report, "failed" if report.failed else "skipped", message)


def _record(report, outcome: str, message: str) -> dict:
    exercise = next((k for k in report.keywords if k in registry.BY_ID), None)
    return {"nodeid": report.nodeid, "exercise": exercise, "outcome": outcome, "message": message}


def pytest_collectreport(report):
    if report.failed:
        _errors.append(f"{report.nodeid}: {report.longreprtext.strip().splitlines()[-1]}")


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"tests": list(_results.values()), "collect_errors": _errors}, f)
