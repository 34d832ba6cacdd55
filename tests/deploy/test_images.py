"""images/: hadolint finds nothing, and what each Dockerfile names exists in the repository.

No Docker engine here: the images are not built. What can be checked without one is checked: lint (hadolint,
the strictest threshold), pinned bases, multi-stage with a non-root final stage free of build tools, the build
context (.dockerignore) letting through every COPY source, and the entrypoints being real modules.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet

from tests.deploy.deploy_tools import ROOT, project_tool

pytestmark = pytest.mark.unit

IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
ENTRYPOINT_MODULES = {
    "controller.Dockerfile": "controller",
    "worker.Dockerfile": "beam.stages",
}
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "cmake", "apt-get install", "apk add")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def parsed(path: Path) -> DockerfileParser:
    return DockerfileParser(str(path))


def final_stage(path: Path) -> list[dict[str, Any]]:
    """The instructions after the last FROM."""
    structure = parsed(path).structure
    last_from = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    return [ins for ins in structure[last_from + 1 :] if ins["instruction"] != "COMMENT"]


def instructions(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [ins["value"] for ins in stage if ins["instruction"] == name]


def exec_form(value: str) -> list[str]:
    form: list[str] = json.loads(value)
    return form


def test_there_are_the_three_images() -> None:
    names = {p.name for p in DOCKERFILES}
    assert names == {"controller.Dockerfile", "worker.Dockerfile", "dataflow-template.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(path: Path) -> None:
    hadolint = project_tool("hadolint")
    proc = subprocess.run(
        [str(hadolint), "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_says_why(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=[A-Z0-9,]+\s+\S.{15,}", line), f"unjustified: {line}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_build_is_multi_stage_with_pinned_bases(path: Path) -> None:
    parents = parsed(path).parent_images
    assert len(parents) >= 2
    for image in parents:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{image} is not pinned to a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_numeric_non_root_user(path: Path) -> None:
    users = instructions(final_stage(path), "USER")
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"final USER is {users[-1]}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_installs_no_build_tools(path: Path) -> None:
    for run in instructions(final_stage(path), "RUN"):
        assert not any(tool in run for tool in BUILD_TOOLS), run


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_decides_on_a_healthcheck(path: Path) -> None:
    assert instructions(final_stage(path), "HEALTHCHECK"), "say HEALTHCHECK NONE when nothing can be probed"


@pytest.mark.parametrize("name", sorted(ENTRYPOINT_MODULES))
def test_entrypoint_runs_a_module_of_the_repository(name: str) -> None:
    [entrypoint] = instructions(final_stage(IMAGES / name), "ENTRYPOINT")
    assert exec_form(entrypoint) == ["python", "-m", ENTRYPOINT_MODULES[name]]
    assert (ROOT / ENTRYPOINT_MODULES[name].replace(".", "/") / "__main__.py").is_file()


def test_controller_healthcheck_probes_the_exposed_port() -> None:
    stage = final_stage(IMAGES / "controller.Dockerfile")
    [healthcheck] = instructions(stage, "HEALTHCHECK")
    assert "127.0.0.1:8080/healthz" in healthcheck
    assert instructions(stage, "EXPOSE") == ["8080"]


def test_flex_template_runs_a_pipeline_file_it_copies_from_the_repository() -> None:
    path = IMAGES / "dataflow-template.Dockerfile"
    py_file = parsed(path).envs["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    copies = [shlex.split(v) for v in instructions(final_stage(path), "COPY") if not v.startswith("--from")]
    sources = [Path(arg) for copy in copies for arg in copy[:-1] if not arg.startswith("--")]
    assert Path(py_file).name in {s.name for s in sources}
    for source in sources:
        assert (ROOT / source).is_file()
        assert 'if __name__ == "__main__":' in (ROOT / source).read_text(encoding="utf-8")


def test_flex_template_uses_the_python311_launcher_base_and_beam_boot() -> None:
    path = IMAGES / "dataflow-template.Dockerfile"
    parents = parsed(path).parent_images
    assert parents[-1].startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base:")
    [entrypoint] = instructions(final_stage(path), "ENTRYPOINT")
    assert exec_form(entrypoint) == ["/opt/apache/beam/boot"]


def test_python_and_beam_versions_agree_with_pyproject() -> None:
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11,<3.12")
    beam_spec = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("apache-beam"))
    allowed = SpecifierSet(beam_spec.removeprefix("apache-beam"))
    beam_versions = set()
    for path in DOCKERFILES:
        args = parsed(path).args
        if "PYTHON_VERSION" in args:
            assert args["PYTHON_VERSION"].startswith("3.11.")
        if "BEAM_VERSION" in args:
            beam_versions.add(args["BEAM_VERSION"])
    assert len(beam_versions) == 1, f"worker and dataflow-template disagree on Beam: {beam_versions}"
    assert beam_versions.pop() in allowed


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_lets_every_copied_source_through(path: Path) -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    reopened = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert ignore[ignore.index("*")] == "*", ".dockerignore should exclude everything, then reopen"
    for value in instructions(parsed(path).structure, "COPY"):
        if value.startswith("--from"):
            continue
        for source in [a for a in shlex.split(value)[:-1] if not a.startswith("--")]:
            top = Path(source).parts[0]
            assert top in reopened, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), f"{source} does not exist"


def test_readme_gives_the_build_command_of_every_image() -> None:
    readme = (IMAGES / "README.md").read_text(encoding="utf-8")
    for path in DOCKERFILES:
        assert f"-f images/{path.name}" in readme
