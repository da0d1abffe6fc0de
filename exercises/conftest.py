"""The grader's entry for ``pytest exercises/``: everything lives in the package ``_grader``.

Options: ``pytest exercises/ --help`` (section "minigpt grading").
"""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grader.plugin import *  # noqa: E402,F401,F403  (pytest's hooks and the `ex` fixture)
