"""What breaks operators, on the real control plane, with the controller as the chart deploys it:
pods deleted and evicted at every stage, runs deleted while the controller is down or while their timers
are pending, a watch stream that silently stalls.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import kopf
import pytest
import yaml

from tests.controlplane.cluster import Cluster
from tests.controlplane.node_agent import NodeAgent
from tests.controlplane.stall_proxy import StallProxy
from tests.e2e.chart_controller import EXAMPLE, Controller, get_run, job_names, kc, run_phase, wait_for

pytestmark = pytest.mark.e2e

STAGES = ["validate", "load", "transform", "aggregate"]


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = kc(cluster, "get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _evict(cluster: Cluster, namespace: str, pod: str) -> None:
    """The Eviction API, as a node drain or the descheduler calls it."""
    cluster.api.create(
        f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
        {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}},
    )


def test_a_pod_deleted_or_evicted_at_every_stage_is_retried_and_the_run_still_succeeds_once(
    control_plane: Cluster, chart_controller: tuple[Controller, Path], kube_namespace: str
) -> None:
    controller, workdir = chart_controller
    kc(control_plane, "apply", "-n", kube_namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
    hit: list[str] = []
    deadline = time.monotonic() + 900
    status: dict[str, Any] = {}
    while len(hit) < len(STAGES) or status.get("phase") not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"stuck: {json.dumps(status)[:2000]}"
        control_plane.check_alive()
        status = (get_run(control_plane, kube_namespace, "inventory-demo") or {}).get("status") or {}
        # No run is ever reported Succeeded while one of its stages' first pods was taken away unseen.
        assert status.get("phase") != "Succeeded" or len(hit) == len(STAGES), status
        for stage in STAGES[len(hit) :][:1]:
            pods = _pods(control_plane, kube_namespace, f"job-name=inventory-demo-{stage}-1")
            if not pods:
                continue
            name = pods[0]["metadata"]["name"]
            if len(hit) % 2 == 0:
                kc(control_plane, "delete", "pod", name, "-n", kube_namespace, "--wait=false")
            else:
                _evict(control_plane, kube_namespace, name)
            hit.append(stage)
        time.sleep(0.2)
    assert status["phase"] == "Succeeded", status.get("message")
    assert [(s["attempt"], s["infraFailures"], s["appFailures"]) for s in status["stages"]] == [(2, 1, 0)] * 4
    # Each attempt's Job exists once; a first attempt's is kept as its record or removed when the
    # controller saw the disruption before the Job controller did.
    jobs = set(job_names(control_plane, kube_namespace))
    assert (
        {f"inventory-demo-{s}-2" for s in STAGES}
        <= jobs
        <= {f"inventory-demo-{s}-{n}" for s in STAGES for n in (1, 2)}
    )
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM inventory_raw.resources").fetchall()[0][0] == 2991
        assert con.sql("SELECT count(*) FROM inventory_tds.resources").fetchall()[0][0] == 2543
    finally:
        con.close()
    assert controller.forbidden() == []


def _slow_run(name: str, **spec: Any) -> str:
    doc = yaml.safe_load((EXAMPLE / "pipelinerun.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"].update(spec)
    return json.dumps(doc)


def test_runs_deleted_while_the_controller_is_down_or_with_timers_pending_leave_nothing(
    control_plane: Cluster,
    chart_controller: tuple[Controller, Path],
    node_agent: NodeAgent,
    kube_namespace: str,
) -> None:
    controller, _ = chart_controller
    node_agent.stop()  # pods stay Pending: both runs wait in their first stage, timers armed
    try:
        ns = ["-n", kube_namespace]
        kc(control_plane, "apply", *ns, "-f", "-", stdin=_slow_run("timed", timeouts={"stageSeconds": 3600}))
        kc(control_plane, "apply", *ns, "-f", "-", stdin=_slow_run("orphan"))
        wait_for(
            control_plane,
            "both first Jobs",
            lambda: job_names(control_plane, kube_namespace) == ["orphan-validate-1", "timed-validate-1"],
        )
        # A run with its timeout timer pending, deleted while the controller runs.
        kc(control_plane, "delete", "pipelinerun", "timed", *ns, "--wait=false")
        wait_for(
            control_plane, "timed to go", lambda: get_run(control_plane, kube_namespace, "timed") is None, 60
        )
        # A run deleted while the controller is scaled to zero: a run of Jobs only carries no finalizer,
        # so it goes at once, and the garbage collector removes its Job and pod without the controller.
        controller.stop()
        kc(control_plane, "delete", "pipelinerun", "orphan", *ns, "--wait=false")
        wait_for(
            control_plane,
            "orphan to go",
            lambda: get_run(control_plane, kube_namespace, "orphan") is None,
            60,
        )
        wait_for(
            control_plane, "their Jobs to go", lambda: job_names(control_plane, kube_namespace) == [], 120
        )
        wait_for(
            control_plane,
            "their pods to go",
            lambda: not _pods(control_plane, kube_namespace, "dataops.io/run"),
            120,
        )
        controller.start()  # and, scaled up again, it finds nothing of it to act on
    finally:
        node_agent.start()
    # A finished run goes by itself when its TTL passes (controller.finishedTTLSeconds), the chart's RBAC
    # allowing the controller to delete it.
    controller.restart(DATAOPS_FINISHED_TTL_SECONDS="3")
    missing = json.loads(_slow_run("brief"))
    missing["spec"]["source"]["uri"] = "/nowhere/missing.csv"
    kc(control_plane, "apply", "-n", kube_namespace, "-f", "-", stdin=json.dumps(missing))
    wait_for(
        control_plane,
        "the run to fail",
        lambda: run_phase(control_plane, kube_namespace, "brief") in ("Failed", ""),
    )
    wait_for(
        control_plane,
        "the run to expire",
        lambda: get_run(control_plane, kube_namespace, "brief") is None,
        120,
    )
    wait_for(control_plane, "its Jobs to go", lambda: job_names(control_plane, kube_namespace) == [], 120)
    assert controller.forbidden() == []
    errors = [
        line
        for path in controller.logs
        for line in path.read_text(errors="replace").splitlines()
        if ('"severity": "error"' in line or "Traceback" in line) and "will retry" not in line
    ]
    assert errors == [], errors[:5]


def test_a_pod_that_cannot_pull_its_image_fails_its_attempt_through_the_pod_watch_alone(
    control_plane: Cluster,
    chart_controller: tuple[Controller, Path],
    node_agent: NodeAgent,
    kube_namespace: str,
) -> None:
    """The controller's pod watch, filtered by the API server (stage pods still Pending), on a real one:
    a pod whose image cannot be pulled fails its attempt once the grace ends, with no resync to find it."""
    controller, _ = chart_controller
    controller.restart(DATAOPS_RESYNC_SECONDS="3600", DATAOPS_IMAGE_PULL_GRACE_SECONDS="3")
    node_agent.stop()  # no kubelet: the test writes the pod's status as one that cannot pull would
    try:
        kc(control_plane, "apply", "-n", kube_namespace, "-f", "-", stdin=_slow_run("pull"))
        pod = wait_for(
            control_plane,
            "the first stage's pod",
            lambda: next(iter(_pods(control_plane, kube_namespace, "job-name=pull-validate-1")), None),
            120,
        )
        name = pod["metadata"]["name"]
        image = pod["spec"]["containers"][0]["image"]
        waiting = {"reason": "ErrImagePull", "message": f'failed to pull image "{image}": not found'}
        control_plane.api.merge_patch(
            f"/api/v1/namespaces/{kube_namespace}/pods/{name}/status",
            {
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": pod["spec"]["containers"][0]["name"],
                            "image": image,
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"waiting": waiting},
                        }
                    ],
                }
            },
        )

        def second_attempt() -> dict[str, Any] | None:
            stages = ((get_run(control_plane, kube_namespace, "pull") or {}).get("status") or {}).get(
                "stages"
            )
            return stages[0] if stages and stages[0].get("attempt") == 2 else None

        validate = wait_for(control_plane, "the second attempt", second_attempt, 120)
    finally:
        node_agent.start()
    assert (validate["infraFailures"], validate["appFailures"], validate["job"]) == (1, 0, "pull-validate-2")
    assert controller.forbidden() == []


WATCH_TIMEOUT = 20


def test_a_silently_stalled_watch_is_replaced_within_its_timeout(
    control_plane: Cluster, chart_controller: tuple[Controller, Path], kube_namespace: str, tmp_path: Path
) -> None:
    controller, _ = chart_controller
    proxy = StallProxy("127.0.0.1", control_plane.port)
    try:
        config = yaml.safe_load(Path(controller.env["KUBECONFIG"]).read_text())
        config["clusters"][0]["cluster"]["server"] = proxy.url
        proxied = tmp_path / "proxied.kubeconfig"
        proxied.write_text(yaml.safe_dump(config), encoding="utf-8")
        controller.restart(KUBECONFIG=str(proxied), DATAOPS_WATCH_TIMEOUT_SECONDS=str(WATCH_TIMEOUT))
        ns = ["-n", kube_namespace]
        kc(control_plane, "apply", *ns, "-f", "-", stdin=_slow_run("before"))
        wait_for(
            control_plane,
            "the first run's Job",
            lambda: "before-validate-1" in job_names(control_plane, kube_namespace),
        )
        time.sleep(2)
        frozen = proxy.stall()
        assert frozen >= 2  # at least the watch streams and the client's connection
        stalled_at = time.monotonic()
        kc(control_plane, "apply", *ns, "-f", "-", stdin=_slow_run("after"))
        wait_for(
            control_plane,
            "the run created during the stall to get its Job",
            lambda: "after-validate-1" in job_names(control_plane, kube_namespace),
            timeout=300,
        )
        took = time.monotonic() - stalled_at
        print(f"\nwatch stalled with {frozen} connections frozen: the new run reconciled after {took:.0f} s")
        # kopf drops a silent watch after the timeout + 5 s; the controller's own requests give up
        # after 20 s and are retried 5 s later on a fresh connection.
        assert took < WATCH_TIMEOUT + 5 + 20 + 5 + 15, f"reconciled only after {took:.0f} s"
        assert run_phase(control_plane, kube_namespace, "after") != ""
    finally:
        controller.stop()
        proxy.close()


THROTTLE = "dataops-throttled"
RUNS = 30
LIMIT = 20  # the chart's default controller.maxRunningPerNamespace
FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"


def _throttle(cluster: Cluster, namespace: str, account: str) -> None:
    """API Priority and Fairness: the controller's ServiceAccount gets the smallest share there is (one
    seat, no queue): whatever it sends at once beyond that is refused with 429 and Retry-After."""
    cluster.api.create(
        f"{FLOWCONTROL}/prioritylevelconfigurations",
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": THROTTLE},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 0,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            },
        },
    )
    everything = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"]}
    cluster.api.create(
        f"{FLOWCONTROL}/flowschemas",
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": THROTTLE},
            "spec": {
                "matchingPrecedence": 2,  # right after "exempt": before every built-in schema
                "priorityLevelConfiguration": {"name": THROTTLE},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"name": account, "namespace": namespace},
                            }
                        ],
                        "resourceRules": [{**everything, "clusterScope": True}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    )


def _unthrottle(cluster: Cluster) -> None:
    for kind in ("flowschemas", "prioritylevelconfigurations"):
        if cluster.api.exists(f"{FLOWCONTROL}/{kind}/{THROTTLE}"):
            cluster.api.delete(f"{FLOWCONTROL}/{kind}/{THROTTLE}")


def _rejected(cluster: Cluster) -> float:
    """How many requests the API server refused with 429 at our priority level, from its own metrics."""
    text = cluster.api.text("/metrics")
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_flowcontrol_rejected_requests_total{")
            and f'priority_level="{THROTTLE}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_429s_from_the_api_server_are_retried_without_flooding_it(
    control_plane: Cluster,
    chart_controller: tuple[Controller, Path],
    node_agent: NodeAgent,
    kube_namespace: str,
    system_namespace: str,
) -> None:
    controller, _ = chart_controller
    node_agent.stop()  # runs wait at their first stage: only the controller's own requests matter
    account = controller.account
    try:
        source = {
            "apiVersion": "dataops.io/v1alpha1",
            "kind": "IngestionSource",
            "metadata": {"name": "throttled", "namespace": kube_namespace},
            "spec": yaml.safe_load((EXAMPLE.parent / "transactions" / "ingestionsource.yaml").read_text())[
                "spec"
            ],
        }
        time.sleep(3)  # the controller is up and watching
        try:
            _throttle(control_plane, system_namespace, account)
            kc(control_plane, "apply", "-f", "-", stdin=json.dumps(source))
            runs = "\n---\n".join(_slow_run(f"busy-{i}") for i in range(RUNS))
            kc(control_plane, "apply", "-n", kube_namespace, "-f", "-", stdin=runs)
            time.sleep(20)
            refused = _rejected(control_plane)
        finally:
            _unthrottle(control_plane)
        # Handlers that failed with a TemporaryError (429) are retried by kopf, their progress kept in
        # annotations (a status schema would prune it); the runs' own timers retry theirs.
        wait_for(
            control_plane,
            "the IngestionSource's CronJob",
            lambda: (
                control_plane.kubectl(
                    "get", "cronjob", "throttled-consolidate", "-n", kube_namespace
                ).returncode
                == 0
            ),
            timeout=120,
        )
        # The chart's namespace limit (controller.maxRunningPerNamespace: 20) admits the oldest 20; the
        # others wait Queued, in creation order.
        wait_for(
            control_plane,
            "the admitted runs' Jobs",
            lambda: len(job_names(control_plane, kube_namespace)) == LIMIT,
            180,
        )

        def queued() -> list[str]:
            out = kc(control_plane, "get", "pipelineruns", "-n", kube_namespace, "-o", "json")
            return [
                r["metadata"]["name"]
                for r in json.loads(out)["items"]
                if (r.get("status") or {}).get("reason") == "Queued"
            ]

        wait_for(control_plane, "the others Queued", lambda: len(queued()) == RUNS - LIMIT, 120)
        time.sleep(5)
        assert len(job_names(control_plane, kube_namespace)) == LIMIT
        assert refused > 0, "the API server refused nothing: the throttle did not apply"
    finally:
        node_agent.start()
    print(
        f"\n429s during 20 s of throttling ({RUNS} runs): {refused:.0f} requests refused ({refused / 20:.1f}/s)"
    )
    # No error loop: kopf backs off (1, 2, 5, 10, 30 s, honouring Retry-After) and every run retries on
    # its own timer (5 s, or Retry-After): a few requests per second in all, not hundreds.
    assert refused / 20 < 20


def test_every_status_field_survives_the_crd_schema_and_kopf_keeps_progress_in_annotations(
    control_plane: Cluster, kube_namespace: str
) -> None:
    """A structural schema prunes what it does not declare: a status the API server trimmed would be
    rewritten on every reconcile, and retries kept in a pruned field would silently reset."""
    from controller import status as status_codec
    from controller.operator import configure
    from controller.planner import StageRows, initial_status
    from controller.spec import PipelineRunSpec

    kc(
        control_plane,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(Path(__file__).parents[2] / "crds"),
    )
    kc(control_plane, "wait", "--for=condition=Established", "crd/pipelineruns.dataops.io", "--timeout=60s")
    doc = yaml.safe_load((EXAMPLE / "pipelinerun.yaml").read_text())
    doc["metadata"] = {"name": "roundtrip", "namespace": kube_namespace}
    created = control_plane.api.create(
        f"/apis/dataops.io/v1alpha1/namespaces/{kube_namespace}/pipelineruns", doc
    )
    spec = PipelineRunSpec.model_validate(doc["spec"])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status = initial_status(spec)
    stages = tuple(
        replace(
            s,
            state="Failed",
            attempt=3,
            app_failures=2,
            infra_failures=1,
            start_time=now,
            completion_time=now,
            retry_after=now,
            message="m",
            reason="r",
            rows=StageRows(1, 2, 3, 4),
            tables=("a.b",),
            job=f"roundtrip-{s.name}-3",
            dataflow_job_id="2026-01-01_00_00_00-1",
        )
        for s in status.stages
    )
    status = replace(
        status, phase="Failed", stages=stages, start_time=now, completion_time=now, report="gs://b/r"
    )
    written = status_codec.to_dict(status, 1, now)
    path = f"/apis/dataops.io/v1alpha1/namespaces/{kube_namespace}/pipelineruns/roundtrip/status"
    control_plane.api.merge_patch(path, {"status": written})
    assert control_plane.api.get(path)["status"] == written
    assert created["metadata"]["name"] == "roundtrip"

    settings = kopf.OperatorSettings()
    configure(settings, {})
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
