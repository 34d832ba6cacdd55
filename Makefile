# The interface: make demo | test | e2e | bench | lint | fmt | clean
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= work/demo

.PHONY: demo demo-transactions test unit integration e2e controlplane lint fmt bench clean venv tools browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is required (Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: the example PipelineRun, end to end, on the embedded defaults (DuckDB, local files, DirectRunner)
demo: $(STAMP)
	$(VENV)/bin/dataops run examples/inventory/pipelinerun.yaml --workdir $(WORKDIR) --report
	$(PY) examples/inventory/show.py --workdir $(WORKDIR)

## test: lint, types, the tools, the control plane and the browser the tests need (cached under ~/.cache/dataops), then every test
test: $(STAMP) lint tools controlplane browser
	$(PY) -m pytest -q --durations=15

## controlplane: etcd, kube-apiserver, kube-controller-manager, kubectl, helm from the Go module proxy (once: minutes; then instant)
controlplane:
	bash tests/controlplane/build.sh

## e2e: the end-to-end tests on the real control plane alone
e2e: $(STAMP) controlplane
	$(PY) -m pytest -q -m controlplane

## browser: Debian's chromium for the report's browser tests (apt-get, with sudo when not root; once)
browser:
	bash tests/report/browser.sh

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

## bench: figures, not tests (1,000,000 rows; the controller on the real control plane; several minutes)
bench: $(STAMP)
	$(PY) tests/bench/bench_pipelinerun.py
	$(PY) tests/bench/bench_consolidation.py
	$(PY) tests/bench/bench_lookups.py
	bash tests/controlplane/build.sh >/dev/null
	$(PY) tests/bench/bench_controller.py

## demo-transactions: two consolidation cycles catching up on new rows
demo-transactions: $(STAMP)
	$(PY) examples/transactions/demo.py --workdir $(WORKDIR)-transactions

clean:
	rm -rf work .pytest_cache .mypy_cache .ruff_cache
