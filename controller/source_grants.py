"""The grants IngestionSources declare (``spec.grants``), indexed per namespace for the tenancy check.

Fed from the controller's watch of IngestionSources (every event, deletions included) and, before the
first decision in a namespace, from one listing of its sources, so a restarted controller knows them all
before it judges a run. A refusal is confirmed against a fresh listing first: a run created together with
the source that grants it (or by that source) is never refused because the source's event came second.

Only a source whose spec is valid grants anything (an invalid one reports InvalidSpec and grants nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from controller.ingestion import parse_source_spec
from controller.tenancy import Grant, source_grant

Lister = Callable[[str], Awaitable[list[dict[str, Any]]]]  # namespace -> its IngestionSources


def grant_of(body: dict[str, Any]) -> Grant:
    """What one IngestionSource grants its namespace (nothing if its spec is invalid or being deleted)."""
    if body["metadata"].get("deletionTimestamp"):
        return Grant()
    spec = parse_source_spec(body)
    if isinstance(spec, str) or spec.grants is None:
        return Grant()
    return source_grant(spec.grants.model_dump())


@dataclass
class SourceGrants:
    by_namespace: dict[str, dict[str, Grant]] = field(default_factory=dict)  # ns -> source name -> grant
    seeded: set[str] = field(default_factory=set)

    def observe(self, body: dict[str, Any], event_type: str | None = None) -> None:
        """One watch event of an IngestionSource."""
        meta = body["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        sources = self.by_namespace.setdefault(namespace, {})
        if event_type == "DELETED":
            sources.pop(name, None)
        else:
            sources[name] = grant_of(body)

    def replace(self, namespace: str, bodies: list[dict[str, Any]]) -> None:
        """A listing of the namespace's sources: it replaces what the index knew of them."""
        self.by_namespace[namespace] = {b["metadata"]["name"]: grant_of(b) for b in bodies}
        self.seeded.add(namespace)

    def known(self, namespace: str) -> Grant:
        """The union of what the namespace's sources grant, as far as the index knows."""
        union = Grant()
        for grant in self.by_namespace.get(namespace, {}).values():
            union = union.union(grant)
        return union

    async def of(self, namespace: str, lister: Lister, fresh: bool = False) -> Grant:
        """The union of the namespace's sources' grants; listed first if never listed, or ``fresh``."""
        if fresh or namespace not in self.seeded:
            self.replace(namespace, await lister(namespace))
        return self.known(namespace)
