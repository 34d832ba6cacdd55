"""The controller's settings: one place, read once from the environment the Helm chart sets.

Pure: :func:`settings_from_env` takes the mapping to read, so tests pass their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.tenancy import Grants, GrantsError, parse_grants


class SettingsError(ValueError):
    """A controller setting is malformed; the message names the variable."""


@dataclass(frozen=True)
class DataflowSettings:
    """Where and how stage jobs run (the controller's ``DATAOPS_DATAFLOW_*`` settings)."""

    project: str = ""
    region: str = ""
    template: str = ""  # gs:// path of the stage flex template spec
    consolidation_template: str = ""  # gs:// path of the consolidation flex template spec
    service_account: str = ""  # the workers' service account (email)
    network: str = ""
    subnetwork: str = ""
    temp_location: str = ""
    staging_location: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    max_workers: int = 0  # 0: Dataflow's default
    use_public_ips: bool = False
    endpoint: str = "https://dataflow.googleapis.com"  # another: a private endpoint, or tests
    anonymous: bool = False  # no credentials: a local endpoint (tests)

    def missing(self) -> list[str]:
        """The settings a launch cannot do without, by their environment variable names."""
        wanted = {
            "DATAOPS_DATAFLOW_PROJECT": self.project,
            "DATAOPS_DATAFLOW_REGION": self.region,
            "DATAOPS_DATAFLOW_TEMPLATE": self.template,
        }
        return [name for name, value in wanted.items() if not value]


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    worker_image: str = "dataops-operator/worker:dev"
    image_pull_policy: str = "IfNotPresent"
    stage_service_account: str = "dataops-worker"  # in the run's own namespace, never the controller's
    workdir: str = "/var/lib/dataops"  # where stages keep run files; gs://... in production
    python: str = "python"  # the interpreter in the worker image
    stage_resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    max_running_per_namespace: int = 20  # runs past their first stage at once per namespace; 0: no limit
    finished_ttl_seconds: int | None = None  # delete finished runs after this long (None: keep)
    image_pull_grace_seconds: int = 300  # a pod that cannot pull its image this long is an infra failure
    resync_seconds: float = 300.0  # how often unfinished runs are looked at even without events
    watch_timeout_seconds: int = 300  # the watch inactivity timeout (a silently stalled stream is restarted)
    peering: str = "dataops-operator"
    grants: Grants = field(default_factory=Grants)  # tenancy (DATAOPS_GRANTS, DATAOPS_TENANCY_ENABLED, ...)
    pubsub_project: str | None = None  # where IngestionSources' notification subscriptions live
    notification_poll_seconds: float = 5.0  # how often notification subscriptions are pulled
    dataflow: DataflowSettings = field(default_factory=DataflowSettings)  # stages of ``runner: dataflow``
    dataflow_poll_seconds: float = 30.0  # how often a running Dataflow job's state is read


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None


def _non_negative(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value is None or value < 0:
        raise SettingsError(f"{name}={env.get(name)!r} must be 0 (no limit) or more")
    return value


def _json(env: Mapping[str, str], name: str, default: Any) -> Any:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingsError(f"{name}={env.get(name)!r} is neither 'true' nor 'false'")
    return raw == "true"


def _grants(env: Mapping[str, str]) -> Grants:
    try:
        return parse_grants(
            _json(env, "DATAOPS_GRANTS", None),
            enabled=_bool(env, "DATAOPS_TENANCY_ENABLED", False),
            from_sources=_bool(env, "DATAOPS_SOURCE_GRANTS", True),
        )
    except GrantsError as exc:
        raise SettingsError(str(exc)) from None


def settings_from_env(env: Mapping[str, str]) -> Settings:
    namespaces = tuple(n.strip() for n in env.get("DATAOPS_NAMESPACES", "").split(",") if n.strip())
    return Settings(
        namespaces=namespaces,
        worker_image=env.get("DATAOPS_WORKER_IMAGE", Settings.worker_image),
        image_pull_policy=env.get("DATAOPS_IMAGE_PULL_POLICY", Settings.image_pull_policy),
        stage_service_account=env.get("DATAOPS_STAGE_SERVICE_ACCOUNT", Settings.stage_service_account),
        workdir=env.get("DATAOPS_WORKDIR", Settings.workdir),
        python=env.get("DATAOPS_PYTHON", Settings.python),
        stage_resources=_json(env, "DATAOPS_STAGE_RESOURCES", {}),
        node_selector=_json(env, "DATAOPS_NODE_SELECTOR", {}),
        tolerations=_json(env, "DATAOPS_TOLERATIONS", []),
        extra_env=_json(env, "DATAOPS_STAGE_ENV", {}),
        max_running_per_namespace=_non_negative(env, "DATAOPS_MAX_RUNNING_PER_NAMESPACE", 20),
        finished_ttl_seconds=_int(env, "DATAOPS_FINISHED_TTL_SECONDS", None),
        image_pull_grace_seconds=_int(env, "DATAOPS_IMAGE_PULL_GRACE_SECONDS", 300) or 300,
        resync_seconds=float(_int(env, "DATAOPS_RESYNC_SECONDS", 300) or 300),
        watch_timeout_seconds=_int(env, "DATAOPS_WATCH_TIMEOUT_SECONDS", 300) or 300,
        peering=env.get("DATAOPS_PEERING", Settings.peering),
        grants=_grants(env),
        pubsub_project=(
            env.get("DATAOPS_PUBSUB_PROJECT")
            or env.get("PUBSUB_PROJECT_ID")
            or env.get("GOOGLE_CLOUD_PROJECT")
            or None
        ),
        notification_poll_seconds=float(_int(env, "DATAOPS_NOTIFICATION_POLL_SECONDS", 5) or 5),
        dataflow=dataflow_settings(env),
        dataflow_poll_seconds=float(_int(env, "DATAOPS_DATAFLOW_POLL_SECONDS", 30) or 30),
    )


def dataflow_settings(env: Mapping[str, str]) -> DataflowSettings:
    credentials = env.get("DATAOPS_DATAFLOW_CREDENTIALS") or "adc"
    if credentials not in ("adc", "anonymous"):
        raise SettingsError(f"DATAOPS_DATAFLOW_CREDENTIALS={credentials!r} is neither 'adc' nor 'anonymous'")
    labels = _json(env, "DATAOPS_DATAFLOW_LABELS", {})
    if not isinstance(labels, dict):
        raise SettingsError("DATAOPS_DATAFLOW_LABELS must be a JSON object of label names to values")
    return DataflowSettings(
        project=env.get("DATAOPS_DATAFLOW_PROJECT", ""),
        region=env.get("DATAOPS_DATAFLOW_REGION", ""),
        template=env.get("DATAOPS_DATAFLOW_TEMPLATE", ""),
        consolidation_template=env.get("DATAOPS_DATAFLOW_CONSOLIDATION_TEMPLATE", ""),
        service_account=env.get("DATAOPS_DATAFLOW_SERVICE_ACCOUNT", ""),
        network=env.get("DATAOPS_DATAFLOW_NETWORK", ""),
        subnetwork=env.get("DATAOPS_DATAFLOW_SUBNETWORK", ""),
        temp_location=env.get("DATAOPS_DATAFLOW_TEMP_LOCATION", ""),
        staging_location=env.get("DATAOPS_DATAFLOW_STAGING_LOCATION", ""),
        labels={str(k): str(v) for k, v in labels.items()},
        max_workers=_int(env, "DATAOPS_DATAFLOW_MAX_WORKERS", 0) or 0,
        use_public_ips=env.get("DATAOPS_DATAFLOW_USE_PUBLIC_IPS", "false").lower() == "true",
        endpoint=env.get("DATAOPS_DATAFLOW_ENDPOINT") or DataflowSettings.endpoint,
        anonymous=credentials == "anonymous",
    )


def consolidation_dataflow_env(settings: Settings) -> dict[str, str]:
    """The environment a consolidation CronJob pod of ``runner: dataflow`` launches its job with: the
    controller's Dataflow settings, read back by :func:`dataflow_settings` in the pod, where the
    template is the consolidation one."""
    df = settings.dataflow
    env = {
        "DATAOPS_DATAFLOW_PROJECT": df.project,
        "DATAOPS_DATAFLOW_REGION": df.region,
        "DATAOPS_DATAFLOW_TEMPLATE": df.consolidation_template,
        "DATAOPS_DATAFLOW_SERVICE_ACCOUNT": df.service_account,
        "DATAOPS_DATAFLOW_NETWORK": df.network,
        "DATAOPS_DATAFLOW_SUBNETWORK": df.subnetwork,
        "DATAOPS_DATAFLOW_TEMP_LOCATION": df.temp_location,
        "DATAOPS_DATAFLOW_STAGING_LOCATION": df.staging_location,
        "DATAOPS_DATAFLOW_LABELS": json.dumps(dict(df.labels), sort_keys=True) if df.labels else "",
        "DATAOPS_DATAFLOW_MAX_WORKERS": str(df.max_workers) if df.max_workers else "",
        "DATAOPS_DATAFLOW_USE_PUBLIC_IPS": "true" if df.use_public_ips else "false",
        "DATAOPS_DATAFLOW_ENDPOINT": "" if df.endpoint == DataflowSettings.endpoint else df.endpoint,
        "DATAOPS_DATAFLOW_CREDENTIALS": "anonymous" if df.anonymous else "adc",
        "DATAOPS_DATAFLOW_POLL_SECONDS": str(int(settings.dataflow_poll_seconds)),
    }
    return {name: value for name, value in env.items() if value}
