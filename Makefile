# Two commands a learner needs: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-package test-exercises test-chapters grade lab bench clean

# One stamp per set of extras, so `make demo` does not wait for JupyterLab to install.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.base
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

$(VENV)/.lab: pyproject.toml $(VENV)/.base
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[lab]"
	touch $@

## Train the default model on the built-in Shakespeare, save a checkpoint and loss curve, print a sample.
demo: $(VENV)/.base
	$(BIN)/minigpt train --out runs/demo

## Everything CI runs: the package's tests, the graders on the solutions, and the notebooks.
test: test-package test-exercises test-chapters

test-package: $(VENV)/.dev
	$(BIN)/python -m pytest tests/

test-exercises: $(VENV)/.dev
	$(BIN)/python -m pytest exercises/ --solutions

test-chapters: $(VENV)/.dev
	$(BIN)/python -m pytest --nbval-lax chapters/

## Grade your own exercises (what a learner runs).
grade: $(VENV)/.dev
	$(BIN)/python -m pytest exercises/

## Open the course in JupyterLab, in the project's environment.
lab: $(VENV)/.lab
	$(BIN)/jupyter lab chapters/

## Print speed and quality figures (slow: minutes).
bench: $(VENV)/.base
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/sampling_speed.py

clean:
	rm -rf $(VENV) runs chapters/runs
