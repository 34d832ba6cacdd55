"""Tenancy: a run reads and writes only the datasets, buckets and folders its namespace is granted.

The grants come from the Helm values (``tenancy.grants``, passed as ``DATAOPS_GRANTS``)::

    {"team-a": {"datasets": ["inventory_*"], "buckets": ["landing-team-a"], "paths": ["/data/team-a"],
                "projects": ["team-a-prod"]}}

Patterns are shell globs (``fnmatch``). With no grants configured the installation is single-tenant and
nothing is checked; once any are, a namespace that is not listed is granted nothing. Pure: the controller
refuses a run that reaches outside before its first stage starts, naming the field and the missing grant.
Stage pods run under the run namespace's own ServiceAccount (``controller.manifests``), never the
controller's, so the cloud side (Workload Identity) enforces the same boundary again.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.spec import PipelineRunSpec

KINDS = ("datasets", "buckets", "paths", "projects")


@dataclass(frozen=True)
class Grant:
    datasets: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()

    def allows(self, kind: str, value: str) -> bool:
        patterns: tuple[str, ...] = getattr(self, kind)
        if kind == "paths":
            return any(value == p.rstrip("/") or value.startswith(p.rstrip("/") + "/") for p in patterns)
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True)
class Grants:
    by_namespace: Mapping[str, Grant] = field(default_factory=dict)
    enabled: bool = False

    def of(self, namespace: str) -> Grant:
        return self.by_namespace.get(namespace, Grant())


class GrantsError(ValueError):
    """DATAOPS_GRANTS is malformed; the message says where."""


def parse_grants(raw: Any) -> Grants:
    """Grants from the decoded JSON of DATAOPS_GRANTS (None or {}: tenancy off)."""
    if not raw:
        return Grants()
    if not isinstance(raw, dict):
        raise GrantsError(
            "DATAOPS_GRANTS must be an object: namespace -> {datasets, buckets, paths, projects}"
        )
    out: dict[str, Grant] = {}
    for namespace, grant in raw.items():
        if not isinstance(grant, dict) or set(grant) - set(KINDS):
            raise GrantsError(f"DATAOPS_GRANTS.{namespace}: an object with only {', '.join(KINDS)}")
        values = {}
        for kind in KINDS:
            items = grant.get(kind, [])
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise GrantsError(f"DATAOPS_GRANTS.{namespace}.{kind}: a list of non-empty strings")
            values[kind] = tuple(items)
        out[str(namespace)] = Grant(**values)
    return Grants(out, enabled=True)


def _dataset(table: str) -> str:
    return table.rsplit(".", 1)[0]


def _location(uri: str) -> tuple[str, str] | None:
    """('buckets', bucket) or ('paths', path) for a source or lookup URI; None for what is not a place."""
    if uri.startswith("gs://"):
        return "buckets", uri[5:].split("/", 1)[0]
    if uri.startswith("file://"):
        return "paths", uri[7:]
    if uri.startswith("/"):
        return "paths", uri
    return None  # relative to the spec's folder: the local runner's business, not a cluster's


def accessed(spec: PipelineRunSpec) -> list[tuple[str, str, str]]:
    """Every (kind, value, field) a run reads or writes."""
    out: list[tuple[str, str, str]] = []
    place = _location(spec.source.uri)
    if place:
        out.append((*place, "spec.source.uri"))
    out.append(("datasets", _dataset(spec.load.table), "spec.load.table"))
    if spec.transform is not None:
        for i, lookup in enumerate(spec.transform.lookups):
            if lookup.table:
                out.append(("datasets", _dataset(lookup.table), f"spec.transform.lookups[{i}].table"))
            elif lookup.uri:
                place = _location(lookup.uri)
                if place:
                    out.append((*place, f"spec.transform.lookups[{i}].uri"))
        out.append(("datasets", _dataset(spec.transform.output.table), "spec.transform.output.table"))
    for i, agg in enumerate(spec.aggregate):
        out.append(("datasets", _dataset(agg.output.table), f"spec.aggregate[{i}].output.table"))
    if spec.warehouse is not None and spec.warehouse.project:
        out.append(("projects", spec.warehouse.project, "spec.warehouse.project"))
    return out


def problems(spec: PipelineRunSpec, namespace: str, grants: Grants) -> list[str]:
    """What the run reaches that its namespace is not granted, one message each (empty: allowed)."""
    if not grants.enabled:
        return []
    grant = grants.of(namespace)
    missing = []
    for kind, value, where in accessed(spec):
        if not grant.allows(kind, value):
            singular = kind[:-1]
            missing.append(
                f"{where}: namespace {namespace} is not granted {singular} {value!r}"
                f" (Helm value tenancy.grants.{namespace}.{kind})"
            )
    return missing
