"""Run several grading sessions in one Python process.

``tests/test_grader.py`` grades many folders (batches of typical wrong
answers, tricks, faults). Starting a fresh interpreter for each would start
pytest and the grader's zygote (torch imported and warmed up) again every
time, so the sessions share one interpreter and one zygote. The learner's
code runs only in the workers the zygote forks, so sessions cannot leak into
each other through it.

Usage: python run_many.py JOBS.json  (a list of {"name", "args"}); prints a
JSON list of {"name", "returncode", "output", "seconds"} on its last line.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import pytest


def main(jobs_file: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    results = []
    for job in jobs:
        buffer = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = pytest.main(job["args"])
        results.append({"name": job["name"], "returncode": int(code), "output": buffer.getvalue(),
                        "seconds": round(time.perf_counter() - start, 2)})
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
