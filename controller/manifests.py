"""Builders of the Kubernetes objects a run creates. Pure: (run, stage, attempt, settings) -> manifest.

Names are deterministic, so a replayed event or a restarted controller finds the object it made
instead of making a second one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controller.settings import Settings
from controller.spec import API_VERSION

MANAGED_BY = "dataops-operator"
LABEL_RUN = "dataops.io/run"
LABEL_STAGE = "dataops.io/stage"
LABEL_ATTEMPT = "dataops.io/attempt"
LABEL_SOURCE = "dataops.io/ingestion-source"
RUN_ENV = "DATAOPS_RUN"
TERMINATION_LOG = "/dev/termination-log"


def _short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping it unique with a hash when cut."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-')}-{digest}"


def job_name(run: str, stage: str, attempt: int) -> str:
    suffix = f"-{stage}-{attempt}"
    return _short(run, 63 - len(suffix)) + suffix


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", "PipelineRun"),
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stage_labels(run: str, stage: str, attempt: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "dataops-stage",
        "app.kubernetes.io/instance": _short(run, 63),
        "app.kubernetes.io/component": stage,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "dataops",
        LABEL_RUN: _short(run, 63),
        LABEL_STAGE: stage,
        LABEL_ATTEMPT: str(attempt),
    }


def run_document(run: dict[str, Any]) -> str:
    """What a stage pod reads as its spec: the run's identity and spec, as JSON."""
    meta = run["metadata"]
    return json.dumps(
        {
            "apiVersion": API_VERSION,
            "kind": "PipelineRun",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace", "default"),
                "generation": meta.get("generation", 1),
            },
            "spec": run["spec"],
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def build_stage_job(
    run: dict[str, Any], stage: str, attempt: int, started_at: str, settings: Settings
) -> dict[str, Any]:
    """The Job that runs one attempt of one stage of a run."""
    meta = run["metadata"]
    name = job_name(meta["name"], stage, attempt)
    labels = stage_labels(meta["name"], stage, attempt)
    env = [{"name": RUN_ENV, "value": run_document(run)}]
    env += [{"name": k, "value": v} for k, v in sorted(settings.extra_env.items())]
    container: dict[str, Any] = {
        "name": "stage",
        "image": settings.worker_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [settings.python, "-m", "beam.stages"],
        "args": [
            stage,
            "--spec",
            f"env:{RUN_ENV}",
            "--workdir",
            settings.workdir,
            "--started-at",
            started_at,
            "--result-file",
            TERMINATION_LOG,
        ],
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if settings.stage_resources:
        container["resources"] = settings.stage_resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.stage_service_account,
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if settings.node_selector:
        pod_spec["nodeSelector"] = settings.node_selector
    if settings.tolerations:
        pod_spec["tolerations"] = settings.tolerations
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # retries are the planner's, counted apart from infrastructure failures
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    stage_seconds = (run["spec"].get("timeouts") or {}).get("stageSeconds")
    if stage_seconds:
        job_spec["activeDeadlineSeconds"] = int(stage_seconds)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace", "default"),
            "labels": labels,
            "annotations": {"dataops.io/generation": str(meta.get("generation", 1))},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": job_spec,
    }
