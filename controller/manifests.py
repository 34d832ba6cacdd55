"""Builders of the Kubernetes objects a run creates. Pure: (run, stage, attempt, settings) -> manifest.

Names are deterministic, so a replayed event or a restarted controller finds the object it made
instead of making a second one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controller.settings import Settings, consolidation_dataflow_env
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


def _worker_pod_spec(
    name: str, module: str, args: list[str], env: list[dict[str, str]], settings: Settings
) -> dict[str, Any]:
    """The pod of a worker container: the image, the hardened security context, the stage settings."""
    container: dict[str, Any] = {
        "name": name,
        "image": settings.worker_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [settings.python, "-m", module],
        "args": args,
        "env": env + [{"name": k, "value": v} for k, v in sorted(settings.extra_env.items())],
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
    return pod_spec


def build_stage_job(
    run: dict[str, Any], stage: str, attempt: int, started_at: str, settings: Settings
) -> dict[str, Any]:
    """The Job that runs one attempt of one stage of a run."""
    meta = run["metadata"]
    name = job_name(meta["name"], stage, attempt)
    labels = stage_labels(meta["name"], stage, attempt)
    args = [
        stage,
        "--spec",
        f"env:{RUN_ENV}",
        "--workdir",
        settings.workdir,
        "--started-at",
        started_at,
        "--result-file",
        TERMINATION_LOG,
    ]
    pod_spec = _worker_pod_spec(
        "stage", "beam.stages", args, [{"name": RUN_ENV, "value": run_document(run)}], settings
    )
    # No activeDeadlineSeconds: stage timeouts are the planner's, which stops the Job and fails the run.
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # retries are the planner's, counted apart from infrastructure failures
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
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


SOURCE_ENV = "DATAOPS_SOURCE"
ARGOCD_SAFE = {
    # Created by the controller, not by Git: Argo CD neither prunes these nor calls the app OutOfSync.
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "argocd.argoproj.io/sync-options": "Prune=false",
}


def source_document(source: dict[str, Any]) -> str:
    meta = source["metadata"]
    return json.dumps(
        {
            "apiVersion": API_VERSION,
            "kind": "IngestionSource",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace", "default"),
                "generation": meta.get("generation", 1),
            },
            "spec": source["spec"],
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def cronjob_name(source: str) -> str:
    return _short(source, 52 - len("-consolidate")) + "-consolidate"


def build_consolidation_cronjob(source: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The CronJob that runs one consolidation cycle per schedule tick, never two at once."""
    meta, spec = source["metadata"], source["spec"]
    cons = spec["consolidation"]
    labels = {
        "app.kubernetes.io/name": "dataops-consolidation",
        "app.kubernetes.io/instance": _short(meta["name"], 63),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "dataops",
        LABEL_SOURCE: _short(meta["name"], 63),
    }
    history = int(spec.get("historyLimit", 10))
    args = [f"env:{SOURCE_ENV}", "--workdir", settings.workdir, "--result-file", TERMINATION_LOG]
    env = [{"name": SOURCE_ENV, "value": source_document(source)}]
    if cons.get("runner") == "dataflow":  # the pod launches its job as the controller would (worker.env wins)
        dataflow = consolidation_dataflow_env(settings)
        env += [{"name": k, "value": v} for k, v in sorted(dataflow.items()) if k not in settings.extra_env]
    pod_spec = _worker_pod_spec("consolidate", "beam.consolidation", args, env, settings)
    cron: dict[str, Any] = {
        "schedule": cons["schedule"],
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": int(cons.get("startingDeadlineSeconds", 300)),
        "suspend": bool(spec.get("suspend", False)),
        "successfulJobsHistoryLimit": min(history, 100),
        "failedJobsHistoryLimit": min(history, 100),
        "jobTemplate": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "backoffLimit": 0,
                "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            },
        },
    }
    if cons.get("timeZone"):
        cron["timeZone"] = cons["timeZone"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(meta["name"]),
            "namespace": meta.get("namespace", "default"),
            "labels": labels,
            "ownerReferences": [owner_reference(source)],
        },
        "spec": cron,
    }


def file_run_name(source: str, object_uri: str, object_generation: str) -> str:
    """One name per object version: a file is never run twice, whatever restarts happen."""
    digest = hashlib.sha256(f"{object_uri}#{object_generation}".encode()).hexdigest()[:12]
    return f"{_short(source, 63 - 13)}-{digest}"


def build_file_run(source: dict[str, Any], object_uri: str, object_generation: str) -> dict[str, Any]:
    """The PipelineRun of one new object under an IngestionSource's prefix."""
    meta = source["metadata"]
    template = json.loads(json.dumps(source["spec"]["files"]["template"]))
    # A bucket object is read at the generation discovered (gsutil's #generation suffix), so a file
    # overwritten while its run goes on is never mixed with the new one (that one gets its own run).
    pinned = f"{object_uri}#{object_generation}" if object_uri.startswith("gs://") else object_uri
    template.setdefault("source", {})["uri"] = pinned
    return {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "metadata": {
            "name": file_run_name(meta["name"], object_uri, object_generation),
            "namespace": meta.get("namespace", "default"),
            "labels": {LABEL_SOURCE: _short(meta["name"], 63), "app.kubernetes.io/managed-by": MANAGED_BY},
            "annotations": {
                **ARGOCD_SAFE,
                "dataops.io/object-uri": object_uri[:2000],
                "dataops.io/object-generation": object_generation,
            },
            "ownerReferences": [{**owner_reference(source), "controller": True, "blockOwnerDeletion": False}],
        },
        "spec": template,
    }
