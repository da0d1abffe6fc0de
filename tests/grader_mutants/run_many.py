"""Run several grading sessions in one Python process.

``tests/test_grader.py`` grades one folder per typical wrong answer. Starting
a fresh interpreter for each would import torch again every time, so the
mutant runs share one: ``exercises/_target.py`` drops the ``exNN_*`` modules
of the previous target before each session, which this also exercises.

Usage: python run_many.py JOBS.json  (a list of {"name", "args"}); prints a
JSON list of {"name", "returncode", "output"} on its last line.
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
