"""The controller's RBAC, derived from what it really asks the API server (its audit log), against the chart.

The controller runs as the chart deploys it (``tests/e2e/chart_controller.py``: the chart's ServiceAccount,
Role and ClusterRole) through a representative workload: an IngestionSource whose CronJob is created,
changed and removed, and whose dropped file becomes a PipelineRun that the node agent runs to Succeeded and
the source's history limit then deletes (its finalizer deleting the stage Jobs). The API server's audit log
(``Cluster.audit_log``, Metadata level) then says every (API group, resource, subresource, verb) the
controller's user asked for. Both directions are checked, by evaluating the rendered rules here:

- every request is granted by a rule bound to the ServiceAccount (none went through on a wider grant, none
  was refused);
- every verb a rule grants was used, or is in ``UNUSED_BUT_NEEDED`` with the reason (least privilege).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import pytest
import yaml

from controller.manifests import LABEL_RUN
from tests.controlplane.cluster import ApiError, Cluster
from tests.e2e.chart_controller import EXAMPLE, Controller, job_names, kc, render_chart, run_phase, wait_for

pytestmark = pytest.mark.e2e

# (API group, resource[/subresource], verb) -> why the chart grants it though this workload never uses it. The
# first audit found 14 verbs granted and never used (Events in events.k8s.io and their patch, get and update of
# the status subresources, get of pods, CRDs, namespaces and peerings, list and watch of CronJobs, watch of pods,
# granted again since the controller watches stage pods); they were removed from templates/_rbac.tpl rather than
# listed here. A verb only a path this workload does not take needs goes here with its reason, or the workload
# grows to take it (the timed-out run below stops a Job).
DATAFLOW_FINALIZER = "the finalizer of runs with a Dataflow stage, the only ones that carry it (a Dataflow run is deleted in tests/integration/test_controller_dataflow.py)"
UNUSED_BUT_NEEDED: dict[tuple[str, str, str], str] = {
    ("dataops.io", "pipelineruns", "patch"): DATAFLOW_FINALIZER
}

Request = tuple[str, str, str]  # (API group, resource[/subresource], verb)


def requests_of(audit_log: Path, user: str) -> Iterator[dict[str, Any]]:
    """``user``'s requests on API resources in the audit log, each once."""
    ids: set[str] = set()
    for line in audit_log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event["user"]["username"] != user or event["auditID"] in ids or "objectRef" not in event:
            continue  # another user, a second stage of one request, or a discovery (non-resource) URL
        ids.add(event["auditID"])
        yield event


def audited_requests(audit_log: Path, user: str) -> Counter[tuple[str, str, str, str]]:
    """(group, resource[/subresource], verb, namespace) -> count of the requests ``user`` made."""
    seen: Counter[tuple[str, str, str, str]] = Counter()
    for event in requests_of(audit_log, user):
        ref = event["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        seen[(ref.get("apiGroup", ""), resource, event["verb"], ref.get("namespace", ""))] += 1
    return seen


def job_and_pod_reads(audit_log: Path, user: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(verb, resource, its label then field selectors) of each of ``user``'s lists and watches of Jobs and pods."""
    found = []
    for event in requests_of(audit_log, user):
        resource = event["objectRef"].get("resource")
        if event["verb"] in ("list", "watch") and resource in ("jobs", "pods"):
            query = parse_qs(urlsplit(event["requestURI"]).query)
            selectors = query.get("labelSelector", []) + query.get("fieldSelector", [])
            found.append((event["verb"], resource, tuple(selectors)))
    return found


def bound_rules(docs: list[dict[str, Any]], namespace: str, account: str) -> list[tuple[str, dict[str, Any]]]:
    """(namespace the rule applies in, "" for every one; rule) of every rule bound to the ServiceAccount."""
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    found = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else "", ref["name"])]
        found += [(scope, rule) for rule in role["rules"]]
    return found


def rule_allows(rule: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    """Kubernetes' RBAC rule matching (pkg/apis/rbac/v1/evaluation_helpers.go), names aside."""
    assert "nonResourceURLs" not in rule and "resourceNames" not in rule, f"not evaluated here: {rule}"
    sub = resource.partition("/")[2]
    resources = rule["resources"]
    return (
        ("*" in rule["apiGroups"] or group in rule["apiGroups"])
        and ("*" in resources or resource in resources or (bool(sub) and f"*/{sub}" in resources))
        and ("*" in rule["verbs"] or verb in rule["verbs"])
    )


def granted(rules: Iterable[tuple[str, dict[str, Any]]]) -> set[Request]:
    """Every (group, resource, verb) the rules spell out (a '*' stays a '*')."""
    return {
        (group, resource, verb)
        for _, rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def table(used: Counter[tuple[str, str, str, str]], rules: list[tuple[str, dict[str, Any]]]) -> str:
    """The derived table: every verb used (with its count) and every verb granted, side by side."""
    counts: Counter[Request] = Counter()
    for (group, resource, verb, _), n in used.items():
        counts[(group, resource, verb)] += n
    rows = sorted(set(counts) | granted(rules))
    lines = [f"{'group':<22} {'resource':<28} {'verb':<17} {'requests':>8}  granted"]
    for group, resource, verb in rows:
        ok = any(rule_allows(rule, group, resource, verb) for _, rule in rules)
        note = UNUSED_BUT_NEEDED.get((group, resource, verb), "")
        lines.append(
            f"{group or '(core)':<22} {resource:<28} {verb:<17} {counts[(group, resource, verb)]:>8}"
            f"  {'yes' if ok else 'NO'}{f'  (unused: {note})' if note else ''}"
        )
    return "\n".join(lines)


def test_every_verb_the_controller_uses_is_granted_and_every_verb_granted_is_used(
    control_plane: Cluster,
    chart_controller: tuple[Controller, Path],
    kube_namespace: str,
    system_namespace: str,
    tmp_path: Path,
) -> None:
    controller, workdir = chart_controller
    drop = tmp_path / "drop"
    drop.mkdir()
    run_spec = yaml.safe_load((EXAMPLE / "pipelinerun.yaml").read_text())["spec"]
    template = {**run_spec, "source": {k: v for k, v in run_spec["source"].items() if k != "uri"}}
    consolidation = yaml.safe_load(
        (EXAMPLE.parent / "transactions" / "ingestionsource.yaml").read_text(encoding="utf-8")
    )["spec"]["consolidation"]
    source = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "drops", "namespace": kube_namespace},
        "spec": {
            "historyLimit": 0,  # a finished run is deleted by the controller at the next poll
            "files": {"prefix": str(drop), "pattern": "*.csv", "template": template, "pollSeconds": 5},
            "consolidation": consolidation,
        },
    }
    kc(control_plane, "apply", "-f", "-", stdin=json.dumps(source))
    cronjob = ["get", "cronjob", "drops-consolidate", "-n", kube_namespace, "-o", "json"]
    wait_for(
        control_plane, "the source's CronJob", lambda: control_plane.kubectl(*cronjob).returncode == 0, 60
    )
    # A stage over its timeout: the controller stops it (deletes its Job) and the run fails.
    timed = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "timed", "namespace": kube_namespace},
        "spec": {**run_spec, "timeouts": {"stageSeconds": 1}},
    }
    kc(control_plane, "apply", "-f", "-", stdin=json.dumps(timed))
    wait_for(
        control_plane,
        "the timed run to fail",
        lambda: run_phase(control_plane, kube_namespace, "timed") == "Failed",
    )
    kc(control_plane, "delete", "pipelinerun", "timed", "-n", kube_namespace)
    (drop / "inventory.csv").write_bytes((EXAMPLE / "inventory.csv").read_bytes())

    def status() -> dict[str, Any]:
        out = kc(control_plane, "get", "ingestionsource", "drops", "-n", kube_namespace, "-o", "json")
        found: dict[str, Any] = json.loads(out).get("status") or {}
        return found

    def runs() -> list[str]:
        out = kc(control_plane, "get", "pipelineruns", "-n", kube_namespace, "-o", "json")
        return [r["metadata"]["name"] for r in json.loads(out)["items"]]

    wait_for(control_plane, "a run for the dropped file", lambda: runs(), 60)
    merge = ["patch", "ingestionsource", "drops", "-n", kube_namespace, "--type=merge", "-p"]
    kc(control_plane, *merge, json.dumps({"spec": {"consolidation": {"schedule": "*/30 * * * *"}}}))
    wait_for(
        control_plane,
        "the CronJob's new schedule",
        lambda: json.loads(kc(control_plane, *cronjob))["spec"]["schedule"] == "*/30 * * * *",
        60,
    )
    wait_for(control_plane, "the run to finish and be pruned", lambda: not runs(), 180)
    wait_for(control_plane, "its Jobs to go", lambda: job_names(control_plane, kube_namespace) == [], 60)
    kc(control_plane, *merge, json.dumps({"spec": {"consolidation": None}}))
    wait_for(control_plane, "the CronJob to go", lambda: control_plane.kubectl(*cronjob).returncode != 0, 60)
    controller.stop()

    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:  # the run went through every stage before it was pruned
        assert con.sql("SELECT count(*) FROM inventory_bds.cost_by_group").fetchall()[0][0] > 0
    finally:
        con.close()
    assert status()["files"]["runsCreated"] == 1
    docs = render_chart(control_plane, system_namespace, kube_namespace)
    rules = bound_rules(docs, system_namespace, controller.account)
    user = f"system:serviceaccount:{system_namespace}:{controller.account}"
    used = audited_requests(control_plane.audit_log, user)
    derived = table(used, rules)
    refused = [
        key
        for key in used
        if not any(
            rule_allows(rule, key[0], key[1], key[2]) for scope, rule in rules if scope in ("", key[3])
        )
    ]
    used_verbs = {(group, resource, verb) for group, resource, verb, _ in used}
    idle = [
        g
        for g in sorted(granted(rules))
        if g not in UNUSED_BUT_NEEDED
        and not any(
            rule_allows({"apiGroups": [g[0]], "resources": [g[1]], "verbs": [g[2]]}, *u) for u in used_verbs
        )
    ]
    assert not refused, f"used but not granted by the chart: {refused}\n{derived}"
    assert not idle, (
        f"granted by the chart but never used (remove, or allow-list with a reason): {idle}\n{derived}"
    )
    assert controller.forbidden() == []
    # Jobs and pods are read filtered by the API server: another workload of the namespace (here the
    # source's cycle Jobs and their pods) never reaches the controller's watches, nor do pods once running.
    reads = job_and_pod_reads(control_plane.audit_log, user)
    assert [r for r in reads if not r[2]] == []
    assert {("watch", "jobs", (LABEL_RUN,)), ("watch", "pods", (LABEL_RUN, "status.phase=Pending"))} <= set(
        reads
    )


def test_a_run_author_cannot_declare_an_ingestion_source_and_a_namespace_admin_can(
    control_plane: Cluster, kube_namespace: str, system_namespace: str
) -> None:
    """Tenancy's trust model on a real API server: an IngestionSource's spec.grants widen what the namespace's
    runs may reach, so the chart's -edit role (bound to run authors) may not create one; -admin may."""
    docs = render_chart(control_plane, system_namespace, kube_namespace)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    user_roles = {
        name.removeprefix("rbac.authorization.k8s.io/aggregate-to-"): d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ClusterRole"
        for name in d["metadata"]["labels"]
        if name.startswith("rbac.authorization.k8s.io/aggregate-to-")
    }
    kc(
        control_plane,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(crds),
    )
    for crd in crds:
        kc(
            control_plane,
            "wait",
            "--for=condition=Established",
            f"crd/{crd['metadata']['name']}",
            "--timeout=60s",
        )
    roles = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] in user_roles.values()]
    kc(control_plane, "apply", "-f", "-", stdin=yaml.safe_dump_all(roles))
    for who, role in (("author", user_roles["edit"]), ("owner", user_roles["admin"])):
        kc(control_plane, "create", "serviceaccount", who, "-n", kube_namespace)
        kc(
            control_plane,
            "create",
            "rolebinding",
            who,
            "-n",
            kube_namespace,
            f"--clusterrole={role}",
            f"--serviceaccount={kube_namespace}:{who}",
        )
    run = yaml.safe_load((EXAMPLE / "pipelinerun.yaml").read_text(encoding="utf-8"))
    source = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "finance"},
        "spec": {
            "grants": {"datasets": ["finance_*"]},
            "consolidation": yaml.safe_load(
                (EXAMPLE.parent / "transactions" / "ingestionsource.yaml").read_text(encoding="utf-8")
            )["spec"]["consolidation"],
        },
    }
    base = f"/apis/dataops.io/v1alpha1/namespaces/{kube_namespace}"
    author = control_plane.service_account_api(kube_namespace, "author")
    owner = control_plane.service_account_api(kube_namespace, "owner")

    author.create(f"{base}/pipelineruns", run)
    with pytest.raises(ApiError) as refused:
        author.create(f"{base}/ingestionsources", source)
    owner.create(f"{base}/ingestionsources", source)

    assert refused.value.code == 403
    assert owner.get(f"{base}/ingestionsources/finance")["spec"]["grants"] == {"datasets": ["finance_*"]}
