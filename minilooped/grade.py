"""``python -m minilooped.grade [CHAPTER | EXERCISE ...]``: grade the exercises.

Runs the graders of tests/graders/ on your code in exercises/ (or, with
``--target reference``, on the library's own solutions) in a separate pytest process,
and prints one row per exercise: points, PASSED or FAILED, and the first failure.

    python -m minilooped.grade 1                chapter 1
    python -m minilooped.grade ex2_4            one exercise
    python -m minilooped.grade                  every chapter
    python -m minilooped.grade 1 --json         machine-readable

The exit code is 0 whatever the score (it is a report); 1 means the grading itself
broke (graders not found, a grader that does not import ...). For one exercise's
full failure report, with hints and the failing example: ``pytest tests/graders -m ex1_2``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from .grading import registry
from .grading.collector import REPORT_ENV


class GradeError(RuntimeError):
    """The grading could not run (not a wrong answer)."""


def select(items: list[str]) -> list[registry.Exercise]:
    """Chapters ("1", "01", "ch1") and exercise ids ("ex1_2") -> exercises, in order."""
    if not items:
        return list(registry.EXERCISES)
    chosen = []
    for item in items:
        key = item.lower().removeprefix("chapter").removeprefix("ch")
        if item.lower().startswith("ex"):
            chosen.append(registry.get(item.lower()))
        elif key.isdigit() and registry.chapter_exercises(int(key)):
            chosen += registry.chapter_exercises(int(key))
        else:
            known = ", ".join(str(c) for c in registry.CHAPTERS)
            raise ValueError(f"{item!r} is neither a chapter with exercises ({known}) nor an exercise id (ex1_2)")
    return list(dict.fromkeys(chosen))


def run_graders(exercises: list[registry.Exercise], target: str, verbose: bool = False) -> list[dict]:
    """Run the graders of ``exercises`` in a pytest subprocess; one record per test."""
    root = registry.repo_root()
    graders = root / "tests" / "graders"
    files = sorted({str(graders / f"test_ch{ex.chapter:02d}.py") for ex in exercises})
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise GradeError(f"grader file(s) {', '.join(missing)} not found: run the grader from the root of a "
                         "minilooped clone (git clone ... && make install)")
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        env = dict(os.environ, **{registry.TARGET_ENV: target, REPORT_ENV: report})
        cmd = [sys.executable, "-m", "pytest", *files, "-m", " or ".join(ex.id for ex in exercises),
               "-p", "minilooped.grading.collector", "-p", "no:cacheprovider", "-q", "--tb=short",
               "-o", "addopts=", "--rootdir", str(root)]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=not verbose, text=True)
        if proc.returncode not in (0, 1) or not os.path.exists(report):
            out = "" if verbose else (proc.stdout + proc.stderr)[-3000:]
            raise GradeError(f"pytest exited with code {proc.returncode} while grading:\n  {' '.join(cmd)}\n{out}")
        with open(report, encoding="utf-8") as f:
            data = json.load(f)
    if data["collect_errors"]:
        raise GradeError("a grader could not be collected:\n  " + "\n  ".join(data["collect_errors"]))
    return data["tests"]


def score(exercises: list[registry.Exercise], tests: list[dict]) -> list[dict]:
    """One row per exercise: passed when at least one test ran and none failed."""
    rows = []
    for ex in exercises:
        mine = [t for t in tests if t["exercise"] == ex.id]
        if not mine:
            raise GradeError(f"no grader test ran for {ex.id}: tests/graders/test_ch{ex.chapter:02d}.py "
                             f"needs tests marked @pytest.mark.{ex.id}")
        failed = [t for t in mine if t["outcome"] == "failed"]
        n_passed = sum(t["outcome"] == "passed" for t in mine)
        passed = not failed and n_passed > 0
        message = failed[0]["message"] if failed else ("" if passed else mine[0]["message"])
        rows.append({"id": ex.id, "chapter": ex.chapter, "title": ex.title, "where": ex.where,
                     "points": ex.points, "score": ex.points if passed else 0, "passed": passed,
                     "tests": len(mine), "tests_passed": n_passed, "message": message})
    return rows


def format_table(rows: list[dict], target: str, width: int | None = None) -> str:
    """The score table; each failed exercise's first failure on the line below its row."""
    width = width or max(60, shutil.get_terminal_size((120, 24)).columns)
    title_w = max(len(r["title"]) for r in rows)
    lines = []
    for chapter in dict.fromkeys(r["chapter"] for r in rows):
        mine = [r for r in rows if r["chapter"] == chapter]
        name, module = registry.CHAPTERS[chapter]
        src = "the reference solutions" if target == "reference" else module.replace(".", "/") + ".py"
        lines += ["", f"Chapter {chapter}: {name}  ({src})",
                  f"  {'exercise':<9} {'title':<{title_w}}  {'points':>7}  {'result':<6}  tests"]
        for r in mine:
            lines.append(f"  {r['id']:<9} {r['title']:<{title_w}}  {r['score']:>3} / {r['points']:<1}  "
                         f"{'PASSED' if r['passed'] else 'FAILED':<6}  {r['tests_passed']}/{r['tests']}")
            msg = r["message"].strip().splitlines()[0] if r["message"].strip() else ""
            if msg:
                room = width - 14
                lines.append(f"{'':12}{msg if len(msg) <= room else msg[:room - 3] + '...'}")
        got, total = sum(r["score"] for r in mine), sum(r["points"] for r in mine)
        lines.append(f"  {'':<9} {'chapter ' + str(chapter):<{title_w}}  {got:>3} / {total}")
    got, total = sum(r["score"] for r in rows), sum(r["points"] for r in rows)
    lines += ["", f"Score: {got} / {total} points, {sum(r['passed'] for r in rows)} of {len(rows)} exercises passed."]
    failed = [r["id"] for r in rows if not r["passed"]]
    if failed:
        lines.append(f"The full report of a failed exercise, with hints: pytest tests/graders -m {failed[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minilooped.grade", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("select", nargs="*", metavar="CHAPTER|EXERCISE",
                        help="chapter numbers (1) or exercise ids (ex1_2); default: every chapter")
    parser.add_argument("--target", choices=registry.TARGETS, default="student",
                        help="grade your stubs in exercises/ (default) or the library's reference solutions")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output too")
    args = parser.parse_args(argv)
    try:
        exercises = select(args.select)
    except (ValueError, KeyError) as e:
        parser.error(str(e.args[0]))
    try:
        tests = run_graders(exercises, args.target, verbose=args.verbose and not args.json)
        rows = score(exercises, tests)
    except GradeError as e:
        print(f"grade: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"target": args.target, "score": sum(r["score"] for r in rows),
                          "max_score": sum(r["points"] for r in rows), "exercises": rows, "tests": tests}, indent=1))
    else:
        print(format_table(rows, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
