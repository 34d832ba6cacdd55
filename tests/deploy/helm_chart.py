"""The real ``helm`` binary and the chart helm/dataops-operator, for tests/deploy/test_helm_chart.py.

Where helm comes from, in this order:
1. ``$HELM`` (a path to the binary);
2. the test control plane's cache, ``${DATAOPS_CACHE:-$HOME/.cache/dataops}/controlplane/*/bin/helm`` (built from
   the Go module proxy by ``tests/controlplane/build.sh``, newest first);
3. ``helm`` on PATH.
None of them: in CI (``CI=true``) the test fails and says what to run; elsewhere ``build.sh`` is run once (a few
minutes cold, shared with the end-to-end tests), as ``tests/deploy/tools.sh`` is for the Terraform tools.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version

from tests.deploy.deploy_tools import ROOT, in_ci

CHART = ROOT / "helm" / "dataops-operator"
BUILD_SCRIPT = ROOT / "tests" / "controlplane" / "build.sh"
ENVIRONMENTS = ("dev", "staging", "prod")
RELEASE = "dataops-operator"
NAMESPACE = "dataops-system"


def cache_dir() -> Path:
    return Path(os.environ.get("DATAOPS_CACHE") or Path.home() / ".cache" / "dataops")


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@cache
def find_helm() -> Path:
    """The helm binary: $HELM, else the control plane cache, else PATH, else build it (never in CI)."""
    given = os.environ.get("HELM")
    if given:
        if not _executable(Path(given)):
            pytest.fail(f"HELM={given} is not an executable file")
        return Path(given)
    cached = [p for p in cache_dir().glob("controlplane/*/bin/helm") if _executable(p)]
    if cached:
        return max(cached, key=lambda p: p.stat().st_mtime)
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    how = (
        f"run `bash {BUILD_SCRIPT.relative_to(ROOT)}` (builds helm from the Go module proxy into "
        f"{cache_dir()}/controlplane/<key>/bin/helm), or set HELM=/path/to/helm"
    )
    if in_ci():
        pytest.fail(f"helm is missing: {how}")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=3600
    )
    built = Path(proc.stdout.strip().splitlines()[-1]) / "helm" if proc.stdout.strip() else None
    if proc.returncode != 0 or built is None or not _executable(built):
        pytest.fail(f"helm is missing and building it failed: {how}\n{proc.stderr[-3000:]}")
    return built


def helm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs helm with no cluster and no user configuration to read."""
    env = {
        **os.environ,
        "KUBECONFIG": os.devnull,
        "HELM_CACHE_HOME": str(cache_dir() / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(cache_dir() / "helm" / "config"),
        "HELM_DATA_HOME": str(cache_dir() / "helm" / "data"),
    }
    return subprocess.run(
        [str(find_helm()), *args], capture_output=True, text=True, check=False, timeout=120, cwd=cwd, env=env
    )


def values_file(environment: str) -> Path:
    return CHART / f"values-{environment}.yaml"


@dataclass(frozen=True)
class Rendered:
    """What ``helm template`` printed, parsed: every document, CRDs of the chart's crds/ folder included."""

    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name or '*'} rendered"
        return found[0]

    @property
    def controller(self) -> dict[str, Any]:
        """The controller container of the Deployment."""
        deployment = self.one("Deployment")
        container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
        return container

    @property
    def controller_env(self) -> dict[str, str]:
        """The controller's plain environment variables (name -> value)."""
        return {e["name"]: e["value"] for e in self.controller["env"] if "value" in e}


def template_args(
    environment: str | None = None,
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    kube_version: str | None = None,
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    if environment:
        args += ["--values", str(values_file(environment))]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


@cache
def render(
    environment: str | None = None,
    values: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    kube_version: str | None = None,
) -> Rendered:
    """``helm template`` of the chart; fails the test with helm's message when it does not render."""
    proc = helm(*template_args(environment, values, sets, kube_version))
    if proc.returncode != 0:
        pytest.fail(f"helm template failed:\n{proc.stderr}")
    return Rendered(tuple(d for d in yaml.safe_load_all(proc.stdout) if d))


def render_error(*sets: str) -> str:
    """helm template's error for values that must not render (the test fails if they do)."""
    proc = helm(*template_args(sets=sets))
    assert proc.returncode != 0, f"helm template accepted --set {' '.join(sets)}"
    return proc.stderr


def chart_min_kube_version() -> Version:
    """The minimum of Chart.yaml's kubeVersion (">=1.30.0-0")."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.\d+(-0)?", chart["kubeVersion"])
    assert match, f"Chart.yaml kubeVersion {chart['kubeVersion']!r} is not of the form >=X.Y.Z-0"
    return Version(f"{match[1]}.{match[2]}")


def supported_kube_versions() -> list[str]:
    """Each Kubernetes minor kubernetes-validate ships schemas of, from the chart's minimum on ("1.30.0", ...)."""
    from kubernetes_validate.utils import all_versions

    minimum = chart_min_kube_version()
    shipped = sorted({Version(v) for v in all_versions()})
    return [str(v) for v in shipped if Version(f"{v.major}.{v.minor}") >= minimum]


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?: |$)")


def doc_comments(values_text: str) -> dict[str, str]:
    """values.yaml's ``# --`` comments (helm-docs style): dotted key path -> the description under ``# --``.

    A key is documented when the comment block right above it starts a line with ``# --``.
    """
    found: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    block: list[str] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped)
            continue
        match = _KEY.match(line)
        if not stripped or stripped.startswith("- ") or not match:
            block = []
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        start = next((i for i, text in enumerate(block) if text.startswith("# --")), None)
        if start is not None:
            text = " ".join(b.lstrip("#").strip() for b in block[start:])
            found[".".join(key for _, key in path)] = text.removeprefix("--").strip()
        block = []
    return found


def schema_values(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """The values of a values.schema.json: dotted path -> schema node, for every node that is a value (no
    ``properties`` of its own: scalars, lists, maps and Kubernetes objects), groups recursed into."""
    found: dict[str, dict[str, Any]] = {}
    for key, node in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if "properties" in node and node.get("type") == "object" and "default" not in node:
            found.update(schema_values(node, path))
        else:
            found[path] = node
    return found


def dig(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        node = node[key]
    return node
