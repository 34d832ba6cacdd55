# The interface: make demo | test | e2e | bench | lint | fmt | clean
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= work/demo

.PHONY: demo test unit integration lint fmt bench clean venv tools

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is required (Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: the example PipelineRun, end to end, on the embedded defaults (DuckDB, local files, DirectRunner)
demo: $(STAMP)
	$(VENV)/bin/dataops run examples/inventory/pipelinerun.yaml --workdir $(WORKDIR)
	$(PY) examples/inventory/show.py --workdir $(WORKDIR)

## test: lint, types, the tools the tests need (cached under ~/.cache/dataops), then every test
test: $(STAMP) lint tools
	$(PY) -m pytest -q

## tools: checkov and hclfmt in their own cached venv (Terraform checks)
tools:
	bash tests/deploy/tools.sh

unit: $(STAMP)
	$(PY) -m pytest -q -m unit

integration: $(STAMP)
	$(PY) -m pytest -q -m integration

lint: $(STAMP)
	$(VENV)/bin/ruff check controller beam tests examples
	$(VENV)/bin/ruff format --check controller beam tests examples
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix controller beam tests examples
	$(VENV)/bin/ruff format controller beam tests examples

## bench: figures, not tests (1,000,000 rows; several minutes)
bench: $(STAMP)
	$(PY) tests/bench/bench_pipelinerun.py

clean:
	rm -rf work .pytest_cache .mypy_cache .ruff_cache
