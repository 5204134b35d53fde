"""The graded exercises: one module of stubs per chapter.

Fill in a stub, then grade it from the root of your clone:

    python -m minilooped.grade 1      # chapter 1's score table
    pytest -m ex1_2                   # one exercise, with the full failure report

Each stub has exactly the signature of a library function (its reference solution,
named in the stub's docstring), and is graded on its own: the graders use the library
for everything else, so a wrong answer in one exercise never fails another.
"""
