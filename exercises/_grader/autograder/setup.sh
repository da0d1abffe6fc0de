#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu 22.04).
# Written into dist/autograder.zip by `make gradescope` (exercises/_grader/gradescope.py build).
#
# Raise these Gradescope settings (the assignment's "Configure Autograder" page):
#   - Memory: 2 GB (the default 768 MB is too tight). A run holds torch in the grading process,
#     in a zygote that forks the workers, and in each worker; --fresh-cases adds workers that run
#     solutions/. Measured: @MEMORY@ MiB together at the peak (proportional set sizes summed, Linux,
#     benchmarks/gradebook_speed.py --memory), before the learner's own tensors.
#   - CPU: 2.0 (the default 0.5 makes every test several times slower, and a test that passes in
#     a second at home could reach the grader's @GRADE_TIMEOUT@ s limit per test).
#   - Autograder timeout: above @TIME_LIMIT@ s, the limit run_autograder gives the whole grading
#     run (it then writes results.json with what was earned so far).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ROOT="${MINIGPT_AUTOGRADER_ROOT:-/autograder}"

# Ubuntu 22.04's python3 is 3.10; minigpt needs @PYTHON_FLOOR@ or newer. The deadsnakes archive
# (Launchpad PPA) builds newer CPython releases for Ubuntu LTS as ordinary signed .deb packages,
# so apt installs and verifies it like the rest of the image: no compiler, no script piped from
# the web, and python3.12's venv module comes with it.
apt-get update
apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates
add-apt-repository -y ppa:deadsnakes/ppa
apt-get update
apt-get install -y --no-install-recommends python3.12 python3.12-venv

python3.12 -m venv "$ROOT/venv"
PIP="$ROOT/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check"
$PIP --upgrade pip
# CPU-only torch: the CUDA wheels from PyPI are gigabytes the autograder never uses.
$PIP --index-url https://download.pytorch.org/whl/cpu "@TORCH@"
# The course's other dependencies (pyproject.toml) and pytest, which runs the graders.
$PIP -r "$ROOT/source/requirements.txt"
# The grader's worker drops to an unprivileged user; it must be able to read the graders and the venv.
chmod -R a+rX "$ROOT/source" "$ROOT/venv"
"$ROOT/venv/bin/python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
