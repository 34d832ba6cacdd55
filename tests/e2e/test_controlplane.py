"""The test control plane itself: the API server admits and rejects like a cluster, the real Job, CronJob
and garbage-collector controllers drive Pods that the node agent runs, and RBAC is enforced.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.cluster import Cluster, wait_until
from tests.controlplane.kubeapi import ApiError, Json, KubeApi
from tests.controlplane.node_agent import NodeAgent

pytestmark = pytest.mark.e2e

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.dataops.io
spec:
  group: e2e.dataops.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas, maxReplicas]
              properties:
                replicas: {type: integer}
                maxReplicas: {type: integer}
              x-kubernetes-validations:
                - rule: self.replicas <= self.maxReplicas
                  message: replicas must not exceed maxReplicas
"""


def widget(name: str, replicas: int, max_replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "e2e.dataops.io/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "maxReplicas": max_replicas},
        }
    )


def python_job(name: str, code: str, *, message_file: Path | None = None, backoff_limit: int = 0) -> Json:
    container: Json = {
        "name": "main",
        "image": "stands-in-for-the-worker-image",
        "command": ["python", "-c", code],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    if message_file is not None:
        container["terminationMessagePath"] = str(message_file)
        container["env"].append({"name": "MESSAGE_FILE", "value": str(message_file)})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def job_condition(api: KubeApi, namespace: str, name: str, kind: str) -> Json | None:
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind and c["status"] == "True"), None)


def wait_for_job(cluster: Cluster, namespace: str, name: str, kind: str, timeout: float = 60) -> Json:
    return wait_until(
        lambda: job_condition(cluster.api, namespace, name, kind),
        timeout,
        f"Job {namespace}/{name} to be {kind}",
        cluster.check_alive,
    )


def pods_of(api: KubeApi, namespace: str, selector: str) -> list[Json]:
    items: list[Json] = api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]
    return items


def terminated_state(pod: Json) -> Any:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def widget_crd(control_plane: Cluster) -> Any:
    applied = control_plane.kubectl("apply", "-f", "-", stdin=WIDGET_CRD)
    assert applied.returncode == 0, applied.stderr
    established = control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.e2e.dataops.io"
    )
    assert established.returncode == 0, established.stderr
    yield
    control_plane.kubectl("delete", "crd/widgets.e2e.dataops.io", "--wait=false")


def test_kubectl_parses_the_server_version(control_plane: Cluster) -> None:
    result = control_plane.kubectl("version", "-o", "json")

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"v1\.\d+\.\d+", json.loads(result.stdout)["serverVersion"]["gitVersion"])


def test_helm_is_built_at_its_pinned_version(control_plane_bin: Path) -> None:
    result = subprocess.run(
        [str(control_plane_bin / "helm"), "version", "--short"], capture_output=True, text=True, check=False
    )

    assert result.stdout.startswith("v3.22.0"), result.stderr


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(
    control_plane: Cluster, widget_crd: None, kube_namespace: str
) -> None:
    good = control_plane.kubectl("apply", "-n", kube_namespace, "-f", "-", stdin=widget("good", 1, 3))
    bad = control_plane.kubectl("apply", "-n", kube_namespace, "-f", "-", stdin=widget("bad", 5, 3))

    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0
    assert "replicas must not exceed maxReplicas" in bad.stderr


def test_update_with_a_stale_resource_version_conflicts(control_plane: Cluster, kube_namespace: str) -> None:
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    stale = control_plane.api.create(
        path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cursor"}, "data": {"at": "1"}}
    )
    control_plane.api.merge_patch(f"{path}/cursor", {"data": {"at": "2"}})

    with pytest.raises(ApiError) as conflict:
        control_plane.api.replace(f"{path}/cursor", {**stale, "data": {"at": "3"}})

    assert conflict.value.code == 409


def test_job_running_python_completes_through_the_job_controller(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str, tmp_path: Path
) -> None:
    code = "import os; open(os.environ['MESSAGE_FILE'], 'w').write('hello from ' + os.environ['POD_NAME'])"
    control_plane.api.create(
        f"/apis/batch/v1/namespaces/{kube_namespace}/jobs",
        python_job("hello", code, message_file=tmp_path / "message"),
    )

    wait_for_job(control_plane, kube_namespace, "hello", "Complete")

    [pod] = pods_of(control_plane.api, kube_namespace, "job-name=hello")
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated_state(pod)["exitCode"] == 0
    assert terminated_state(pod)["message"] == f"hello from {pod['metadata']['name']}"


def test_failing_job_reports_exit_code_and_termination_message(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str, tmp_path: Path
) -> None:
    code = "import os, sys; open(os.environ['MESSAGE_FILE'], 'w').write('row 7: bad date'); sys.exit(3)"
    control_plane.api.create(
        f"/apis/batch/v1/namespaces/{kube_namespace}/jobs",
        python_job("broken", code, message_file=tmp_path / "message"),
    )

    failed = wait_for_job(control_plane, kube_namespace, "broken", "Failed")

    [pod] = pods_of(control_plane.api, kube_namespace, "job-name=broken")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert pod["status"]["phase"] == "Failed"
    assert terminated_state(pod)["exitCode"] == 3
    assert terminated_state(pod)["message"] == "row 7: bad date"


def test_pods_wait_pending_while_the_node_agent_is_stopped(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str
) -> None:
    node_agent.stop()
    control_plane.api.create(f"/apis/batch/v1/namespaces/{kube_namespace}/jobs", python_job("later", "pass"))
    [pending] = wait_until(
        lambda: pods_of(control_plane.api, kube_namespace, "job-name=later"),
        30,
        "the Job controller to create the Pod",
        control_plane.check_alive,
    )

    node_agent.start()

    assert pending["status"]["phase"] == "Pending"
    assert not pending["spec"].get("nodeName")
    wait_for_job(control_plane, kube_namespace, "later", "Complete")


def every_minute_cronjob(name: str) -> Json:
    job = python_job("unused", "print('cycle')")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": job["spec"]},
        },
    }


def last_successful_time(api: KubeApi, namespace: str, name: str) -> str | None:
    cronjob = api.get(f"/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}")
    value: str | None = (cronjob.get("status") or {}).get("lastSuccessfulTime")
    return value


def owners_of_jobs(api: KubeApi, namespace: str) -> list[str]:
    jobs = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    return [ref["name"] for job in jobs for ref in job["metadata"].get("ownerReferences", [])]


def test_cronjob_fires_on_its_schedule_through_the_cronjob_controller(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str
) -> None:
    control_plane.api.create(
        f"/apis/batch/v1/namespaces/{kube_namespace}/cronjobs", every_minute_cronjob("every-minute")
    )

    # The next minute boundary, then the Job controller and the node agent: at most ~65 s.
    wait_until(
        lambda: last_successful_time(control_plane.api, kube_namespace, "every-minute"),
        100,
        "the CronJob's first successful Job",
        control_plane.check_alive,
    )

    assert owners_of_jobs(control_plane.api, kube_namespace) == ["every-minute"]


def test_cronjob_made_due_fires_at_once(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str
) -> None:
    control_plane.api.create(
        f"/apis/batch/v1/namespaces/{kube_namespace}/cronjobs", every_minute_cronjob("due")
    )

    control_plane.make_cronjob_due(kube_namespace, "due")

    wait_until(
        lambda: last_successful_time(control_plane.api, kube_namespace, "due"),
        20,
        "the CronJob's Job, started at once",
        control_plane.check_alive,
    )
    assert owners_of_jobs(control_plane.api, kube_namespace) == ["due"]


def test_deleting_a_job_garbage_collects_its_pods_and_their_processes(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str
) -> None:
    control_plane.api.create(
        f"/apis/batch/v1/namespaces/{kube_namespace}/jobs", python_job("long", "import time; time.sleep(600)")
    )
    [pod] = wait_until(
        lambda: pods_of(control_plane.api, kube_namespace, "job-name=long"), 30, "the Job's Pod"
    )
    pid = wait_until(
        lambda: node_agent.pid_of(kube_namespace, pod["metadata"]["name"]), 30, "the Pod's process"
    )

    control_plane.api.delete(
        f"/apis/batch/v1/namespaces/{kube_namespace}/jobs/long", propagation="Background"
    )

    wait_until(
        lambda: not pods_of(control_plane.api, kube_namespace, "job-name=long"),
        60,
        "the garbage collector to delete the Job's Pod",
        control_plane.check_alive,
    )
    assert not process_exists(pid)


def test_deleting_a_pod_kills_its_process(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                }
            ],
        },
    }
    path = f"/api/v1/namespaces/{kube_namespace}/pods"
    control_plane.api.create(path, pod)
    pid = wait_until(lambda: node_agent.pid_of(kube_namespace, "sleeper"), 30, "the Pod's process")

    control_plane.api.delete(f"{path}/sleeper")

    wait_until(lambda: not control_plane.api.exists(f"{path}/sleeper"), 30, "the Pod to be gone")
    assert not process_exists(pid)


def test_service_account_gets_403_for_a_verb_its_role_lacks(
    control_plane: Cluster, kube_namespace: str
) -> None:
    ns = f"/api/v1/namespaces/{kube_namespace}"
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube_namespace}"
    control_plane.api.create(
        f"{ns}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
    )
    control_plane.api.create(
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    control_plane.api.create(
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": kube_namespace}],
        },
    )
    kubeconfig = control_plane.service_account_kubeconfig(kube_namespace, "reader")
    reader = control_plane.service_account_api(kube_namespace, "reader")
    wait_until(
        lambda: reader.get(f"{ns}/configmaps"), 30, "the API server's RBAC cache to see the RoleBinding"
    )

    listed = control_plane.kubectl("get", "configmaps", kubeconfig=kubeconfig)
    created = control_plane.kubectl("create", "configmap", "nope", kubeconfig=kubeconfig)
    with pytest.raises(ApiError) as forbidden:
        reader.create(
            f"{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nope"}}
        )

    assert listed.returncode == 0, listed.stderr
    assert created.returncode != 0
    assert "forbidden" in created.stderr
    assert forbidden.value.code == 403
    assert f"system:serviceaccount:{kube_namespace}:reader" in forbidden.value.message
