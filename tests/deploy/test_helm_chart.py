"""helm/dataops-operator: the real helm lints and renders it, Kubernetes' own schemas accept what it renders.

Every environment's values render; every rendered object is valid for every Kubernetes version the chart
supports (kubernetes-validate, strict: an unknown field is an error); a typo in the values fails; the controller
runs hardened, with exactly the RBAC it uses and every setting of controller/settings.py; the CRDs are the
repository's. helm is found as tests/deploy/helm_chart.py says.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import kubernetes_validate
import pytest
import yaml
from hcl2 import SerializationOptions

from controller.settings import DataflowSettings, Settings, settings_from_env
from tests.deploy.deploy_tools import ROOT
from tests.deploy.helm_chart import (
    CHART,
    ENVIRONMENTS,
    NAMESPACE,
    RELEASE,
    Rendered,
    dig,
    doc_comments,
    helm,
    render,
    render_error,
    schema_values,
    supported_kube_versions,
    values_file,
)

pytestmark = pytest.mark.unit

VALUES_TEXT = (CHART / "values.yaml").read_text(encoding="utf-8")
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
KUBE_VERSIONS = supported_kube_versions()
WATCHED = ("team-a", "team-b")
NAMESPACED = tuple(f"watchNamespaces[{i}]={ns}" for i, ns in enumerate(WATCHED))

# Which verbs the controller may use is proved by tests/e2e/test_rbac_audit.py (the API server's audit log of a
# controller running under the chart's rules); here, which blocks of templates/_rbac.tpl each mode binds.
DISCOVERY = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def peering(grants: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    return {k: v for k, v in grants.items() if k[0] == "kopf.dev"}


def workload(grants: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    return {k: v for k, v in grants.items() if k[0] != "kopf.dev" and k not in DISCOVERY}


# Kinds that are neither Kubernetes' own nor defined by a CRD the chart ships, each checked by a test of its own.
FOREIGN_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """A Role's or ClusterRole's rules as (group, resource) -> verbs."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def crd_schemas(rendered: Rendered) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD the chart renders."""
    found = {}
    for crd in rendered.of_kind("CustomResourceDefinition"):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


def kubernetes_problems(rendered: Rendered, kube_version: str) -> list[str]:
    """Every rendered object checked against Kubernetes' schemas (strict), or its CRD's schema."""
    custom = crd_schemas(rendered)
    problems = []
    for doc in rendered.docs:
        where = f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        key = (doc["apiVersion"], doc["kind"])
        try:
            if key in custom:
                jsonschema.validate(doc, custom[key])
            elif key in FOREIGN_KINDS:
                continue
            else:
                kubernetes_validate.validate(doc, kube_version, strict=True)
        except jsonschema.ValidationError as exc:  # kubernetes_validate.ValidationError is one too
            problems.append(f"{where}: {exc.message} at {'.'.join(map(str, exc.absolute_path))}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    return problems


# -- helm lint and helm template, every environment ---------------------------------------------------------


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_helm_lint_passes_strict_for_each_environment(environment: str | None) -> None:
    values = ["--values", str(values_file(environment))] if environment else []
    for kube_version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        proc = helm(
            "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values, "--kube-version", kube_version
        )

        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


def test_argocd_applications_use_the_chart_and_its_environment_values() -> None:
    for environment in ENVIRONMENTS:
        app = yaml.safe_load(
            (ROOT / "helm" / "argocd" / "environments" / environment / "operator.yaml").read_text()
        )
        source = app["spec"]["source"]
        assert (ROOT / source["path"]).resolve() == CHART
        assert source["helm"]["valueFiles"] == [values_file(environment).name]
        assert values_file(environment).is_file()


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_rendered_manifests_are_valid_for_each_supported_kubernetes(
    environment: str | None, kube_version: str
) -> None:
    rendered = render(environment, kube_version=kube_version)

    assert kubernetes_problems(rendered, kube_version) == []


def test_supported_kubernetes_versions_reach_from_the_chart_minimum_to_1_33() -> None:
    assert KUBE_VERSIONS[0].startswith("1.30.")
    assert any(v.startswith("1.33.") for v in KUBE_VERSIONS)


@pytest.mark.parametrize(
    "sets",
    [
        NAMESPACED,
        (*NAMESPACED, "createNamespaces=true", "peering.enabled=false"),
        (
            "replicaCount=3",
            "metrics.serviceMonitor.enabled=true",
            "networkPolicy.enabled=true",
            "networkPolicy.apiServer.cidrs[0]=10.0.0.1/32",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
            "worker.tolerations[0].key=dedicated",
            "worker.tolerations[0].operator=Exists",
            "controller.finishedTTLSeconds=3600",
            "image.digest=sha256:" + "a" * 64,
        ),
    ],
    ids=["namespaced", "namespaced-standalone", "everything-on"],
)
def test_other_value_combinations_render_valid_manifests(sets: tuple[str, ...]) -> None:
    rendered = render(sets=sets, kube_version=KUBE_VERSIONS[-1])

    assert kubernetes_problems(rendered, KUBE_VERSIONS[-1]) == []


# -- values: documented, typed, closed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (("replicaCont=2",), "replicaCont"),
        (("worker.serviceAcount.name=x",), "serviceAcount"),
        (("metrics.serviceMonitor.intervall=1m",), "intervall"),
        (("podSecurityContext.runAsNonroot=true",), "runAsNonroot"),
        (("replicaCount=two",), "replicaCount"),
        (("image.pullPolicy=Sometimes",), "pullPolicy"),
        (("watchNamespaces[0]=Not_A_Namespace",), "watchNamespaces"),
    ],
)
def test_a_typo_or_wrong_type_in_values_fails_helm(sets: tuple[str, ...], complaint: str) -> None:
    error = render_error(*sets)

    assert "values don't meet the specifications of the schema" in error
    assert complaint in error


def test_every_value_is_documented_and_typed_with_its_default() -> None:
    comments = doc_comments(VALUES_TEXT)
    typed = schema_values(SCHEMA)

    assert set(typed) == set(comments), "values.yaml `# --` comments and values.schema.json disagree"
    for path, node in typed.items():
        assert node.get("description") == comments[path], f"{path}: description differs from values.yaml"
        assert "default" in node, f"{path}: no default in values.schema.json"
        assert node["default"] == dig(VALUES, path), f"{path}: schema default differs from values.yaml"


def test_schema_is_draft_07_and_closed_at_every_level() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, sub in node.items():
                walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}/{i}")

    walk(SCHEMA, "")
    assert open_objects == []
    jsonschema.validate(VALUES, SCHEMA)
    for environment in ENVIRONMENTS:
        jsonschema.validate(yaml.safe_load(values_file(environment).read_text()), SCHEMA)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("replicaCount=2", "peering.enabled=false"), "replicaCount=2 with peering.enabled=false"),
        (("replicaCount=2", "podDisruptionBudget.minAvailable=2"), "No controller pod could ever be evicted"),
        (("createNamespaces=true",), "createNamespaces=true with watchNamespaces empty"),
        (("networkPolicy.enabled=true",), "Set networkPolicy.apiServer.cidrs"),
        (
            ("metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"),
            "Set metrics.service.enabled=true",
        ),
        (("controller.healthPort=9090",), "Give them different ports"),
    ],
)
def test_contradicting_values_fail_with_a_readable_message(sets: tuple[str, ...], message: str) -> None:
    error = render_error(*sets)

    assert "VALUES VALIDATION" in error
    assert message in error


# -- the controller Deployment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_controller_runs_non_root_read_only_without_privileges(environment: str | None) -> None:
    rendered = render(environment)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    container = rendered.controller

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["privileged"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert "hostNetwork" not in pod and "hostPID" not in pod


@pytest.mark.parametrize("environment", [None, *ENVIRONMENTS])
def test_probes_ask_kopf_liveness_endpoint_the_controller_serves(environment: str | None) -> None:
    container = render(environment).controller
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    assert f"--metrics-port={ports['metrics']}" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_controller_runs_the_controller_command_over_every_namespace_by_default() -> None:
    rendered = render()

    assert rendered.controller["args"][:2] == ["controller", "--all-namespaces"]
    assert "--standalone" not in rendered.controller["args"]
    assert rendered.controller_env["DATAOPS_NAMESPACES"] == ""


def test_controller_watches_the_listed_namespaces_only() -> None:
    rendered = render(sets=NAMESPACED)

    assert [a for a in rendered.controller["args"] if a.startswith("--namespace")] == [
        f"--namespace={ns}" for ns in WATCHED
    ]
    assert "--all-namespaces" not in rendered.controller["args"]
    assert settings_from_env(rendered.controller_env).namespaces == WATCHED


def test_kopf_identity_is_the_pod_name() -> None:
    env = {e["name"]: e for e in render().controller["env"]}

    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.mark.parametrize(("environment", "replicas"), [("dev", 1), ("staging", 2), ("prod", 2)])
def test_replicas_pdb_and_peering_per_environment(environment: str, replicas: int) -> None:
    rendered = render(environment)
    deployment = rendered.one("Deployment")

    assert deployment["spec"]["replicas"] == replicas
    if replicas > 1:
        assert rendered.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
        assert "--standalone" not in rendered.controller["args"]
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        assert [p["metadata"]["namespace"] for p in rendered.of_kind("KopfPeering")] == ["dataops"]
    else:
        assert rendered.of_kind("PodDisruptionBudget") == []
        assert "--standalone" in rendered.controller["args"]
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_prod_spreads_replicas_over_zones_and_nodes() -> None:
    deployment = render("prod").one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]

    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


def test_every_controller_setting_is_a_chart_value() -> None:
    source = (ROOT / "controller" / "settings.py").read_text(encoding="utf-8")
    read_by_controller = set(re.findall(r'"(DATAOPS_[A-Z_]+)"', source))
    rendered = render(sets=("controller.finishedTTLSeconds=60", "tenancy.grants.team-a.datasets={team_a_*}"))

    assert read_by_controller <= set(rendered.controller_env)
    assert json.loads(rendered.controller_env["DATAOPS_GRANTS"]) == {"team-a": {"datasets": ["team_a_*"]}}


def test_chart_defaults_are_the_controller_defaults() -> None:
    settings = settings_from_env(render().controller_env)
    defaults = Settings()

    for name in (
        "namespaces",
        "image_pull_policy",
        "stage_service_account",
        "workdir",
        "python",
        "stage_resources",
        "node_selector",
        "tolerations",
        "extra_env",
        "max_running_per_namespace",
        "finished_ttl_seconds",
        "image_pull_grace_seconds",
        "resync_seconds",
        "watch_timeout_seconds",
        "peering",
        "pubsub_project",
        "notification_poll_seconds",
        "dataflow",
        "dataflow_poll_seconds",
    ):
        assert getattr(settings, name) == getattr(defaults, name), name
    assert (
        settings.worker_image
        == f"dataops-operator/worker:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    )


def test_stage_pod_values_reach_the_controller_settings() -> None:
    rendered = render(
        sets=(
            "worker.image.repository=registry.example/worker",
            "worker.image.tag=1.2.3",
            "worker.image.pullPolicy=Always",
            "worker.serviceAccount.name=stage-runner",
            "worker.workdir=/mnt/runs",
            "worker.python=python3.11",
            "worker.resources.requests.cpu=2",
            "worker.resources.limits.memory=4Gi",
            "worker.nodeSelector.pool=batch",
            "worker.tolerations[0].key=dedicated",
            "worker.tolerations[0].operator=Equal",
            "worker.tolerations[0].value=batch",
            "worker.tolerations[0].effect=NoSchedule",
            "worker.env.LOG_LEVEL=debug",
            "gcp.projectId=my-project",
            "gcp.datasets.raw=inv_raw",
            "gcp.topics.validation-error=errors",
            "dataflow.tempLocation=gs://b/tmp",
            "controller.maxRunningPerNamespace=7",
            "controller.finishedTTLSeconds=86400",
            "controller.imagePullGraceSeconds=120",
            "controller.resyncSeconds=1000000",
            "controller.watchTimeoutSeconds=90",
            "peering.name=blue",
        )
    )
    settings = settings_from_env(rendered.controller_env)

    assert settings.worker_image == "registry.example/worker:1.2.3"
    assert settings.image_pull_policy == "Always"
    assert settings.stage_service_account == "stage-runner"
    assert settings.workdir == "/mnt/runs"
    assert settings.python == "python3.11"
    assert settings.stage_resources == {"requests": {"cpu": 2}, "limits": {"memory": "4Gi"}}
    assert settings.node_selector == {"pool": "batch"}
    assert settings.tolerations == [
        {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    ]
    assert settings.extra_env == {
        "LOG_LEVEL": "debug",
        "GOOGLE_CLOUD_PROJECT": "my-project",
        "DATAOPS_BUS": "pubsub",
        "DATAOPS_DATASET_RAW": "inv_raw",
        "DATAOPS_TOPIC_VALIDATION_ERROR": "errors",
        "DATAOPS_DATAFLOW_TEMP_LOCATION": "gs://b/tmp",
        "DATAOPS_DATAFLOW_USE_PUBLIC_IPS": "false",
    }
    assert settings.max_running_per_namespace == 7
    assert settings.finished_ttl_seconds == 86400
    assert settings.image_pull_grace_seconds == 120
    assert settings.resync_seconds == 1000000
    assert settings.watch_timeout_seconds == 90
    assert settings.peering == "blue"


def test_dataflow_values_reach_the_controller_settings() -> None:
    rendered = render(
        sets=(
            "gcp.projectId=my-project",
            "gcp.region=europe-west1",
            "dataflow.templateSpecPrefix=gs://b/templates/",
            "dataflow.serviceAccountEmail=worker@my-project.iam.gserviceaccount.com",
            "dataflow.network=dataops",
            "dataflow.subnetwork=regions/europe-west1/subnetworks/nodes",
            "dataflow.tempLocation=gs://b/tmp",
            "dataflow.stagingLocation=gs://b/staging",
            "dataflow.labels.team=data",
            "dataflow.maxWorkers=8",
            "dataflow.pollSeconds=15",
        )
    )
    settings = settings_from_env(rendered.controller_env)

    assert settings.dataflow == DataflowSettings(
        project="my-project",
        region="europe-west1",
        template="gs://b/templates/stage.json",
        consolidation_template="gs://b/templates/consolidation.json",
        service_account="worker@my-project.iam.gserviceaccount.com",
        network="dataops",
        subnetwork="regions/europe-west1/subnetworks/nodes",
        temp_location="gs://b/tmp",
        staging_location="gs://b/staging",
        labels={"team": "data"},
        max_workers=8,
    )
    assert settings.dataflow_poll_seconds == 15
    explicit = render(
        sets=("dataflow.templateSpec=gs://b/t/stage-1.2.json", "dataflow.templateSpecPrefix=gs://x")
    )
    assert settings_from_env(explicit.controller_env).dataflow.template == "gs://b/t/stage-1.2.json"
    consolidation = render(sets=("dataflow.consolidationTemplateSpec=gs://b/t/consolidation-1.2.json",))
    assert (
        settings_from_env(consolidation.controller_env).dataflow.consolidation_template
        == "gs://b/t/consolidation-1.2.json"
    )


def test_worker_env_wins_over_the_gcp_variables() -> None:
    rendered = render(sets=("gcp.projectId=from-gcp", "worker.env.GOOGLE_CLOUD_PROJECT=from-env"))

    assert settings_from_env(rendered.controller_env).extra_env == {
        "GOOGLE_CLOUD_PROJECT": "from-env",
        "DATAOPS_BUS": "pubsub",
    }


def test_image_digest_is_used_instead_of_the_tag() -> None:
    digest = "sha256:" + "b" * 64
    rendered = render(sets=(f"image.digest={digest}", f"worker.image.digest={digest}", "image.tag=x"))

    assert rendered.controller["image"] == f"dataops-operator/controller@{digest}"
    assert rendered.controller_env["DATAOPS_WORKER_IMAGE"] == f"dataops-operator/worker@{digest}"


# -- service accounts, Workload Identity --------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_service_accounts_carry_workload_identity(environment: str) -> None:
    rendered = render(environment)
    controller = rendered.one("ServiceAccount", "dataops-operator")
    worker = rendered.one("ServiceAccount", "dataops-worker")
    deployment = rendered.one("Deployment")

    assert controller["metadata"]["namespace"] == NAMESPACE
    assert controller["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith(
        f"dataops-{environment}-controller@"
    )
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "dataops-operator"
    assert worker["metadata"]["namespace"] == "dataops"
    assert worker["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith(
        f"dataops-{environment}-worker@"
    )
    assert worker["automountServiceAccountToken"] is False
    assert rendered.controller_env["DATAOPS_STAGE_SERVICE_ACCOUNT"] == "dataops-worker"


def test_stage_service_account_is_made_in_every_watched_namespace() -> None:
    rendered = render(sets=NAMESPACED)
    workers = [sa for sa in rendered.of_kind("ServiceAccount") if sa["metadata"]["name"] == "dataops-worker"]

    assert sorted(sa["metadata"]["namespace"] for sa in workers) == sorted(WATCHED)


def test_terraform_helm_values_output_is_accepted_by_the_chart(tmp_path: Path) -> None:
    terraform = terraform_helm_values()
    path = tmp_path / "terraform-values.json"
    path.write_text(json.dumps(terraform), encoding="utf-8")

    rendered = render("prod", values=(path,))

    assert rendered.controller["image"].startswith("sample/controller:")
    assert rendered.controller_env["DATAOPS_WORKER_IMAGE"].startswith("sample/worker:")
    stage_env = settings_from_env(rendered.controller_env).extra_env
    assert stage_env["DATAOPS_DATASET_CONSOLIDATED"] == "sample-consolidated"
    assert stage_env["DATAOPS_TOPIC_OPERATION_IDS"] == "sample-operation-ids"
    assert stage_env["DATAOPS_DATAFLOW_SUBNETWORK"] == "sample"


def terraform_helm_values() -> dict[str, Any]:
    """terraform/gke's `helm_values` output with every interpolation given a sample value ("sample"; a map per
    role for the dataset and topic `for` expressions)."""
    plain = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)

    def load(name: str) -> dict[str, Any]:
        with (ROOT / "terraform" / "gke" / name).open(encoding="utf-8") as handle:
            data: dict[str, Any] = hcl2.load(handle, serialization_options=plain)
        return data

    outputs = {k: v for block in load("outputs.tf")["output"] for k, v in block.items()}
    roles = {
        "google_bigquery_dataset.this": list(load("bigquery.tf")["locals"][0]["datasets"]),
        "google_pubsub_topic.main": list(load("pubsub.tf")["locals"][0]["topics"]),
    }

    def sample(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: sample(v) for k, v in node.items()}
        if isinstance(node, str) and node.startswith("${{for "):
            source = next(s for s in roles if s in node)
            return {role: f"sample-{role}" for role in roles[source]}
        if isinstance(node, str):
            return re.sub(r"\$\{[^}]*\}", "sample", node)
        return node

    values: dict[str, Any] = sample(outputs["helm_values"]["value"])
    return values


# -- RBAC -----------------------------------------------------------------------------------------------------------


def test_cluster_wide_rbac_is_one_cluster_role_with_the_namespaced_rules_and_cluster_peering() -> None:
    rendered = render()
    role = permissions(rendered.one("ClusterRole", RELEASE))
    binding = rendered.one("ClusterRoleBinding")
    namespaced = render(sets=NAMESPACED)
    namespaced_role = permissions(namespaced.of_kind("Role")[0])

    assert workload(role) == workload(namespaced_role) != {}
    assert {k: role[k] for k in DISCOVERY} == permissions(namespaced.one("ClusterRole", RELEASE))
    assert peering(role) == {
        ("kopf.dev", "clusterkopfpeerings"): namespaced_role[("kopf.dev", "kopfpeerings")]
    }
    assert rendered.of_kind("Role") == [] and rendered.of_kind("RoleBinding") == []
    assert binding["roleRef"]["name"] == RELEASE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_namespaced_rbac_is_a_role_per_namespace_and_cluster_discovery_only() -> None:
    rendered = render(sets=NAMESPACED)
    roles = rendered.of_kind("Role")
    bindings = rendered.of_kind("RoleBinding")

    assert set(permissions(rendered.one("ClusterRole", RELEASE))) == DISCOVERY
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(WATCHED)
    for role in roles:
        assert permissions(role) == permissions(roles[0])
        assert set(peering(permissions(role))) == {("kopf.dev", "kopfpeerings")}
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(WATCHED)


def test_standalone_controller_gets_no_peering_rights() -> None:
    cluster = render(sets=("peering.enabled=false",))
    namespaced = render(sets=(*NAMESPACED, "peering.enabled=false"))

    assert peering(permissions(cluster.one("ClusterRole", RELEASE))) == {}
    assert all(peering(permissions(r)) == {} for r in namespaced.of_kind("Role"))
    assert cluster.of_kind("ClusterKopfPeering") == [] and namespaced.of_kind("KopfPeering") == []


USER_VIEW = {
    ("dataops.io", r): {"get", "list", "watch"}
    for r in ("pipelineruns", "pipelineruns/status", "ingestionsources", "ingestionsources/status")
}
WRITE = {"create", "update", "patch", "delete", "deletecollection"}


def test_user_roles_let_editors_run_pipelines_and_only_admins_declare_sources() -> None:
    rendered = render()
    view, edit, admin = (rendered.one("ClusterRole", f"{RELEASE}-{r}") for r in ("view", "edit", "admin"))

    assert permissions(view) == USER_VIEW
    assert permissions(edit) == {
        **USER_VIEW,
        ("dataops.io", "pipelineruns"): {"get", "list", "watch", *WRITE},
    }
    assert permissions(admin) == {
        **USER_VIEW,
        ("dataops.io", "pipelineruns"): {"get", "list", "watch", *WRITE},
        ("dataops.io", "ingestionsources"): {"get", "list", "watch", *WRITE},
    }
    for role, name in ((view, "view"), (edit, "edit"), (admin, "admin")):
        assert role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{name}"] == "true"
    without = render(sets=("rbac.userRoles=false",))
    assert [r["metadata"]["name"] for r in without.of_kind("ClusterRole")] == [RELEASE]


def test_rbac_rules_come_from_rbac_tpl_only() -> None:
    templates = {p.name: p.read_text(encoding="utf-8") for p in (CHART / "templates").glob("*")}

    assert [name for name, text in templates.items() if "verbs:" in text] == ["_rbac.tpl"]
    assert not re.search(r'"\*"', templates["_rbac.tpl"])


# -- CRDs and peering --------------------------------------------------------------------------------------------


def test_chart_crd_files_are_copies_of_the_repository_crds() -> None:
    repository = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}

    assert chart == repository, "helm/dataops-operator/files/crds/ differs from crds/: cp crds/*.yaml there"


def test_rendered_crds_are_the_repository_crds_kept_on_uninstall() -> None:
    rendered = render()

    for path in sorted((ROOT / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text(encoding="utf-8"))
        crd = rendered.one("CustomResourceDefinition", source["metadata"]["name"])
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false,Delete=false"
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()


def test_crds_follow_crds_install_and_crds_keep() -> None:
    not_kept = render(sets=("crds.keep=false",))
    not_installed = render(sets=("crds.install=false",))

    dataops = [c for c in not_kept.of_kind("CustomResourceDefinition") if c["spec"]["group"] == "dataops.io"]
    assert len(dataops) == 2
    assert all(c["metadata"].get("annotations", {}) == {} for c in dataops)
    assert [c["spec"]["group"] for c in not_installed.of_kind("CustomResourceDefinition")] == [
        "kopf.dev",
        "kopf.dev",
    ]


def test_kopf_peering_crds_keep_status_and_peering_objects_use_the_configured_name() -> None:
    cluster = render(sets=("peering.name=blue",))
    namespaced = render(sets=(*NAMESPACED, "peering.name=blue"))
    kopf = [c for c in cluster.of_kind("CustomResourceDefinition") if c["spec"]["group"] == "kopf.dev"]

    assert sorted(c["spec"]["names"]["kind"] for c in kopf) == ["ClusterKopfPeering", "KopfPeering"]
    for crd in kopf:
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert [p["metadata"]["name"] for p in cluster.of_kind("ClusterKopfPeering")] == ["blue"]
    assert cluster.of_kind("KopfPeering") == []
    assert sorted(
        (p["metadata"]["namespace"], p["metadata"]["name"]) for p in namespaced.of_kind("KopfPeering")
    ) == [(ns, "blue") for ns in sorted(WATCHED)]
    assert cluster.controller_env["DATAOPS_PEERING"] == "blue"


def test_created_namespaces_are_restricted_and_kept() -> None:
    rendered = render(sets=(*NAMESPACED, "createNamespaces=true"))

    for namespace in rendered.of_kind("Namespace"):
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert namespace["metadata"]["annotations"] == {
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
        }
    assert sorted(n["metadata"]["name"] for n in rendered.of_kind("Namespace")) == sorted(WATCHED)


# -- metrics and network ------------------------------------------------------------------------------------------


def test_metrics_service_and_service_monitor_point_at_the_metrics_port() -> None:
    rendered = render(
        sets=("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    )
    service = rendered.one("Service")
    monitor = rendered.one("ServiceMonitor")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]

    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert render().of_kind("ServiceMonitor") == []


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_network_policy_allows_api_server_dns_and_metrics_only(environment: str) -> None:
    policy = render(environment).one("NetworkPolicy")
    api, dns = policy["spec"]["egress"]

    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert api == {
        "to": [{"ipBlock": {"cidr": "172.16.0.0/28"}}],
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
    }
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert {p["port"] for p in dns["ports"]} == {53}


# -- labels and NOTES ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_object_carries_the_recommended_labels(environment: str) -> None:
    templated = [d for d in render(environment).docs if d["apiVersion"] != "apiextensions.k8s.io/v1"]
    templated += [
        c
        for c in render(environment).of_kind("CustomResourceDefinition")
        if c["spec"]["group"] == "dataops.io"
    ]

    for doc in templated:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "dataops-operator", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, doc["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", doc["kind"]
        assert labels["app.kubernetes.io/part-of"] == "dataops-operator", doc["kind"]


def test_notes_tell_what_to_run_next(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, "prod")

    assert "kubectl -n dataops-system rollout status deployment/dataops-operator" in notes
    assert "kubectl apply -n dataops -f examples/environments/dev/pipelinerun.yaml" in notes
    assert "kubectl get dataops -n dataops" in notes
    assert "port-forward service/dataops-operator-metrics 9090" in notes


def test_notes_say_to_create_the_stage_service_account_when_watching_every_namespace(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, None)

    assert "kubectl -n default create serviceaccount dataops-worker" in notes


def render_notes(tmp_path: Path, environment: str | None) -> str:
    """NOTES.txt as `helm install` would print it: `helm template` skips NOTES, so a copy of the chart renders
    it into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "files" / "NOTES.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "notes-as-configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}\n'
    )
    args = [
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/notes-as-configmap.yaml",
    ]
    if environment:
        args += ["--values", str(values_file(environment))]
    proc = helm(*args)
    assert proc.returncode == 0, proc.stderr
    notes: str = yaml.safe_load(proc.stdout)["data"]["notes"]
    return notes
