"""The grader of ``pytest exercises/``: its machinery, kept out of the learner's way.

``exercises/conftest.py`` only loads :mod:`_grader.plugin` (the options, the ``ex`` fixture, the score
table and the report). The learner's code never runs in the pytest process: :mod:`_grader.client`
starts worker processes (:mod:`_grader.worker`) that import the learner's file and answer requests
with plain data (:mod:`_grader.protocol`). The other modules: :mod:`_grader.grading` (assertions in
the learner's terms), :mod:`_grader.cases` (seeded inputs, frozen in ``snapshots/``),
:mod:`_grader.oracles` (reference maths), :mod:`_grader.learner` (the ``ex`` stand-in),
:mod:`_grader.target` (which folder ``exNN_*`` imports come from), :mod:`_grader.integrity` (the
checks on a learner's files). Instructors' scripts: ``make_stubs.py``, ``make_snapshots.py``.
"""
