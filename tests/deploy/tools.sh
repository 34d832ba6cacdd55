#!/usr/bin/env bash
# Installs the deploy-test tools that do not belong in the project venv, into a folder of their own, and prints
# the bin folder that holds them:
#   checkov  (PyPI)          its pinned dependencies (pydantic, packaging, networkx...) clash with the project's
#   hclfmt   (Go module)     the HCL formatter/parser that terraform fmt is built on (no terraform binary here)
#   fake-gcs-server (Go module)  the GCS JSON API on loopback, with notifications to Pub/Sub (tests/emulators.py)
#
#   bash tests/deploy/tools.sh            # install once (a minute or two), then a no-op (milliseconds)
#   bash tests/deploy/tools.sh --force    # rebuild from scratch
#
# Where: ${DATAOPS_CACHE:-$HOME/.cache/dataops}/tools-venv. tests/deploy/test_terraform.py looks there.
# Needs python3.11 (or $PYTHON) and go. Changing a pin below makes the next run reinstall: the stamp file holds
# the pins the folder was built from.
set -euo pipefail

CHECKOV="checkov==3.3.30"
HCLFMT="github.com/hashicorp/hcl/v2/cmd/hclfmt@v2.24.0"
FAKE_GCS="github.com/fsouza/fake-gcs-server@v1.56.1"
PYTHON="${PYTHON:-python3.11}"
CACHE="${DATAOPS_CACHE:-$HOME/.cache/dataops}"
VENV="$CACHE/tools-venv"
STAMP="$VENV/.dataops-tools"
WANTED="$CHECKOV $HCLFMT $FAKE_GCS"

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANTED" && -x "$VENV/bin/checkov" && -x "$VENV/bin/hclfmt" && -x "$VENV/bin/fake-gcs-server" ]]; then
  echo "$VENV/bin"
  exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON is required to build $VENV (set PYTHON=...)" >&2; exit 1; }
command -v go >/dev/null || { echo "error: go is required to build hclfmt into $VENV/bin" >&2; exit 1; }

rm -rf "$VENV"
mkdir -p "$CACHE"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$CHECKOV" >&2
GOBIN="$VENV/bin" GOFLAGS=-mod=mod go install "$HCLFMT" >&2
GOBIN="$VENV/bin" GOFLAGS=-mod=mod go install "$FAKE_GCS" >&2
"$VENV/bin/checkov" --version >/dev/null
echo "$WANTED" > "$STAMP"
echo "$VENV/bin"
