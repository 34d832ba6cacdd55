"""Tenancy: a run reads and writes only the datasets, buckets and folders its namespace is granted.

A namespace's grants come from two places, and are their union:

- the Helm values (``tenancy.grants``, passed as ``DATAOPS_GRANTS``), kept by the platform team::

    {"team-a": {"datasets": ["inventory_*"], "buckets": ["landing-team-a"], "paths": ["/data/team-a"],
                "projects": ["team-a-prod"]}}

- the ``spec.grants`` of every IngestionSource in the namespace (same shape), kept by the namespace's
  admins. Whoever may create an IngestionSource in a namespace thereby decides what its runs may reach:
  the chart's ``<release>-edit`` role writes PipelineRuns only, ``<release>-admin`` IngestionSources too,
  and ``tenancy.sourceGrants: false`` (``DATAOPS_SOURCE_GRANTS=false``) leaves the Helm values alone in
  charge.

Patterns are shell globs (``fnmatch``). With no grants configured (and ``tenancy.enabled`` false) the
installation is single-tenant and nothing is checked; once tenancy is on, a namespace is granted only what
these two places grant it. Pure: the controller refuses a run that reaches outside before its first
stage starts, naming the field, the missing grant and where it can be granted. Stage pods run under the
run namespace's own ServiceAccount (``controller.manifests``), never the controller's, so the cloud side
(Workload Identity) enforces the same boundary again.
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

    def union(self, other: Grant) -> Grant:
        """Everything either grants (patterns in order, each once)."""
        return Grant(
            **{kind: tuple(dict.fromkeys((*getattr(self, kind), *getattr(other, kind)))) for kind in KINDS}
        )


@dataclass(frozen=True)
class Grants:
    by_namespace: Mapping[str, Grant] = field(default_factory=dict)
    enabled: bool = False
    # IngestionSources' spec.grants add to their namespace's (DATAOPS_SOURCE_GRANTS)
    from_sources: bool = True

    def of(self, namespace: str) -> Grant:
        return self.by_namespace.get(namespace, Grant())


class GrantsError(ValueError):
    """DATAOPS_GRANTS is malformed; the message says where."""


def parse_grants(raw: Any, enabled: bool = False, from_sources: bool = True) -> Grants:
    """Grants from the decoded JSON of DATAOPS_GRANTS (None or {}: tenancy off unless ``enabled``)."""
    if not raw:
        return Grants(enabled=enabled, from_sources=from_sources)
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
    return Grants(out, enabled=True, from_sources=from_sources)


def source_grant(grants: Mapping[str, Any] | None) -> Grant:
    """The Grant an IngestionSource's ``spec.grants`` (already validated by the spec model) declares."""
    grants = grants or {}
    return Grant(**{kind: tuple(str(p) for p in grants.get(kind) or ()) for kind in KINDS})


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


def where_to_grant(namespace: str, kind: str, grants: Grants) -> str:
    """Where a missing grant of ``kind`` for ``namespace`` can be added."""
    helm = f"Helm value tenancy.grants.{namespace}.{kind}"
    if not grants.from_sources:
        return helm
    return f"{helm}, or spec.grants.{kind} of an IngestionSource in namespace {namespace}"


def problems(
    spec: PipelineRunSpec, namespace: str, grants: Grants, sources: Grant | None = None
) -> list[str]:
    """What the run reaches that its namespace is not granted, one message each (empty: allowed).

    ``sources``: the union of the namespace's IngestionSources' ``spec.grants`` (ignored when
    ``grants.from_sources`` is off)."""
    if not grants.enabled:
        return []
    grant = grants.of(namespace)
    if sources is not None and grants.from_sources:
        grant = grant.union(sources)
    missing = []
    for kind, value, where in accessed(spec):
        if not grant.allows(kind, value):
            singular = kind[:-1]
            missing.append(
                f"{where}: namespace {namespace} is not granted {singular} {value!r}"
                f" (grant it in the {where_to_grant(namespace, kind, grants)})"
            )
    return missing
