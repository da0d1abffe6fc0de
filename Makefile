# Two commands a learner needs: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip options of every install here. .ci/constraints-cpu.txt keeps this machine's CPU build of torch
# (not the package's own requirement); elsewhere: make PIP_OPTIONS= demo, or your own constraints.
PIP_OPTIONS ?= $(if $(wildcard .ci/constraints-cpu.txt),--constraint .ci/constraints-cpu.txt)
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_OPTIONS)

.PHONY: demo test test-package test-exercises test-chapters test-tryit test-tryit-stubs grade lab bench clean check-python

# The oldest Python minigpt runs on: pyproject.toml's requires-python (">=3.11"), written once there.
PYTHON_FLOOR := $(shell sed -n 's/^requires-python *= *">=\([0-9.]*\)".*/\1/p' pyproject.toml)
$(if $(PYTHON_FLOOR),,$(error cannot read requires-python (">=X.Y") from pyproject.toml))
FLOOR_MAJOR  := $(word 1,$(subst ., ,$(PYTHON_FLOOR)))
FLOOR_MINOR  := $(word 2,$(subst ., ,$(PYTHON_FLOOR)))
PICK_ANOTHER := pick another interpreter, e.g. make PYTHON=python3.12 $(or $(MAKECMDGOALS),demo)

# $(call require_python,INTERPRETER,WHAT TO DO): stop, saying why, unless INTERPRETER runs and is
# at least Python $(PYTHON_FLOOR). Checked before the virtual environment is made, so an older
# Python fails here in one line instead of in pip's resolver.
define require_python
@found=$$($(1) -c 'import sys; print("%d %d" % sys.version_info[:2])' 2>/dev/null) || { \
  echo "make: cannot run '$(1)'; minigpt needs Python $(PYTHON_FLOOR) or newer: $(2)" >&2; exit 1; }; \
set -- $$found; \
if [ "$$1" -lt $(FLOOR_MAJOR) ] || { [ "$$1" -eq $(FLOOR_MAJOR) ] && [ "$$2" -lt $(FLOOR_MINOR) ]; }; then \
  echo "make: '$(1)' is Python $$1.$$2, but minigpt needs Python $(PYTHON_FLOOR) or newer: $(2)" >&2; \
  exit 1; fi
endef

## Check that $(PYTHON) is new enough (every target that makes .venv does this first).
check-python:
	$(call require_python,$(PYTHON),$(PICK_ANOTHER))
	@echo "$(PYTHON): fine (minigpt needs Python $(PYTHON_FLOOR) or newer)"

# One stamp per set of extras, so `make demo` does not wait for JupyterLab to install.
$(BIN)/python:
	$(call require_python,$(PYTHON),$(PICK_ANOTHER))
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(call require_python,$(BIN)/python,$(VENV) was made with an older Python: remove it (rm -rf $(VENV)) and $(PICK_ANOTHER))
	$(PIP) -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.base
	$(PIP) -e ".[dev]"
	touch $@

$(VENV)/.lab: pyproject.toml $(VENV)/.base
	$(PIP) -e ".[lab]"
	touch $@

## Train the default model on the built-in Shakespeare, save a checkpoint and loss curve, print a sample.
demo: $(VENV)/.base
	$(BIN)/minigpt train --out runs/demo --overwrite

## Everything CI runs: the package's tests, the graders on the solutions, and the notebooks.
test: test-package test-exercises test-chapters test-tryit

test-package: $(VENV)/.dev
	$(BIN)/python -m pytest tests/

# The graders on the solutions, workers started with fork (Linux); then the grader's self-tests whose outcome
# depends on how workers start (the solutions and stubs graded, tricks, faults, hostile folders) again with
# spawn, as macOS and Windows start them. test-package ran all of tests/test_grader.py with fork.
test-exercises: $(VENV)/.dev
	$(BIN)/python -m pytest exercises/ --solutions
	MINIGPT_GRADER_START=spawn $(BIN)/python -m pytest tests/test_grader.py -m start_method

# --nbval-current-env: the notebooks run on .venv's Python even if another "python3" kernel is installed.
test-chapters: $(VENV)/.dev
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env chapters/

# Every chapter executed with solutions/ as the learner's files: each try-it cell must print "same as
# minigpt's ...: True" (minutes, so apart from test-package). The run with the stubs is test-chapters'
# nbval run plus test_tryit's check of the committed outputs; test-tryit-stubs repeats it from fresh stubs.
test-tryit: $(VENV)/.dev
	$(BIN)/python -m pytest tests/test_tryit.py --notebooks -m notebooks -k solutions

test-tryit-stubs: $(VENV)/.dev
	$(BIN)/python -m pytest tests/test_tryit.py --notebooks -m notebooks -k stubs

## Grade your own exercises (what a learner runs): all chapters, or one with CHAPTER=02.
grade: $(VENV)/.dev
	$(BIN)/python -m pytest $(if $(CHAPTER),$(or $(wildcard exercises/test_ex$(CHAPTER)_*.py),$(error \
	  CHAPTER=$(CHAPTER) matches no exercises/test_ex$(CHAPTER)_*.py: give two digits, e.g. make grade CHAPTER=02)),exercises/)

# The shell of JupyterLab's terminals: the learner's ~/.bashrc, then .venv/bin first on PATH, so
# `pytest` and `python` there are the project's even when ~/.bashrc puts pyenv or conda first.
LAB_BASHRC := $(VENV)/lab-bashrc
LAB_OPTIONS ?=

## Open the course in JupyterLab, in the project's environment (its terminals too: File > New > Terminal).
# The lab's root is the project, so its file browser shows chapters/ and exercises/ side by side;
# chapter 1 opens first (a notebook path given to `jupyter lab` would make chapters/ the root instead).
LAB_START := chapters/01_tokenization.ipynb
lab: $(VENV)/.lab
	@printf '%s\n' '# Written by `make lab`: the start-up file of the shell in JupyterLab'"'"'s terminals.' \
	  '[ -f ~/.bashrc ] && . ~/.bashrc' \
	  'export VIRTUAL_ENV="$(abspath $(VENV))"' \
	  'export PATH="$(abspath $(BIN)):$$PATH"' > $(LAB_BASHRC)
	PATH="$(abspath $(BIN)):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))" $(BIN)/jupyter lab $(LAB_OPTIONS) \
	  --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url="/lab/tree/$(LAB_START)" \
	  --ServerApp.terminado_settings="shell_command=bash --rcfile '$(abspath $(LAB_BASHRC))'"

## Instructors: dist/autograder.zip for Gradescope (setup.sh, run_autograder, graders, solutions/).
GRADESCOPE_ZIP ?= dist/autograder.zip
gradescope:
	$(call require_python,$(PYTHON),$(PICK_ANOTHER))
	$(PYTHON) exercises/_grader/gradescope.py build --out $(GRADESCOPE_ZIP)

## Instructors: grade a class, one folder per learner: make gradebook SUBMISSIONS=DIR [JOBS=2] [GRADEBOOK_OPTIONS=...].
gradebook: $(VENV)/.dev
	$(BIN)/python exercises/_grader/gradebook.py $(or $(SUBMISSIONS),$(error \
	  SUBMISSIONS is not set: make gradebook SUBMISSIONS=DIR, DIR holding one folder per learner)) \
	  $(if $(JOBS),--jobs $(JOBS)) $(GRADEBOOK_OPTIONS)

.PHONY: gradescope gradebook

## Print speed and quality figures (slow: minutes).
bench: $(VENV)/.base
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/sampling_speed.py

## Remove the environment and every run; keep what is committed in chapters/runs/ (the scripts that made the
## results chapters load, and those results: make_*.py, chNN_*.json).
clean:
	rm -rf $(VENV) runs
	[ ! -d chapters/runs ] || find chapters/runs -mindepth 1 -maxdepth 1 ! -name 'make_*.py' ! -name 'ch[0-9][0-9]_*.json' -exec rm -rf {} +
