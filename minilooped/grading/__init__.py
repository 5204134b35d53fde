"""Grading the exercises: the list of exercises, readable checks, the pytest glue.

registry.py    every exercise: id (its pytest marker), title, points, stub, reference
checks.py      assert_close / assert_equal / check_gradients whose failures say what is wrong
collector.py   a pytest plugin recording one result per grader test, for the command
../grade.py    ``python -m minilooped.grade``: runs tests/graders/ and prints the score table

The graders themselves live in tests/graders/, one file per chapter.
"""
