"""Who may start: at most N runs at once per namespace, the excess queued in creation order.

The controller keeps one index of the runs it has seen (from watch events, its own writes, and one
listing per namespace before its first decision there, so a restart does not over-admit). A run is
*active* once any stage attempt started and until it reaches a final phase; a run that has not started
waits until fewer than ``limit`` runs are active and every run created before it has been admitted.

Pure bookkeeping: no I/O here; :mod:`controller.operator` feeds it and acts on its answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.stages import TERMINAL_PHASES

ACTIVE, WAITING, DONE = "active", "waiting", "done"


def state_of(body: dict[str, Any]) -> str:
    """A run's place in the queue, from its status."""
    status = body.get("status") or {}
    if status.get("phase") in TERMINAL_PHASES:
        return DONE
    started = any(int(s.get("attempt") or 0) > 0 for s in status.get("stages") or [])
    return ACTIVE if started else WAITING


@dataclass
class Admission:
    limit: int  # 0: no limit
    runs: dict[str, dict[str, tuple[str, str]]] = field(
        default_factory=dict
    )  # ns -> name -> (created, state)
    seeded: set[str] = field(default_factory=set)

    def observe(self, body: dict[str, Any], state: str | None = None) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        created = str(meta.get("creationTimestamp") or "")
        runs = self.runs.setdefault(namespace, {})
        known = runs.get(name)
        new_state = state or state_of(body)
        if known is not None and known[1] == ACTIVE and new_state == WAITING:
            new_state = ACTIVE  # admitted (reserved) before its first status write came back
        runs[name] = (created or (known[0] if known else ""), new_state)

    def forget(self, namespace: str, name: str) -> None:
        self.runs.get(namespace, {}).pop(name, None)

    def active(self, namespace: str) -> int:
        return sum(1 for _, state in self.runs.get(namespace, {}).values() if state == ACTIVE)

    def waiting(self, namespace: str) -> list[str]:
        """Names of the runs not yet admitted, oldest first."""
        runs = self.runs.get(namespace, {})
        return [n for n, (c, s) in sorted(runs.items(), key=lambda kv: (kv[1][0], kv[0])) if s == WAITING]

    def admit(self, namespace: str, name: str) -> int:
        """0 if the run may start now (its slot is then reserved), else its place in the queue (1: next)."""
        runs = self.runs.get(namespace, {})
        if name in runs and runs[name][1] == ACTIVE:
            return 0
        if self.limit <= 0:
            self._reserve(namespace, name)
            return 0
        queue = self.waiting(namespace)
        ahead = queue.index(name) if name in queue else len(queue)
        free = self.limit - self.active(namespace)
        if ahead < free:
            self._reserve(namespace, name)
            return 0
        return ahead + 1

    def next_up(self, namespace: str) -> list[str]:
        """The waiting runs that a free slot would admit now (to wake them)."""
        if self.limit <= 0:
            return self.waiting(namespace)
        free = max(self.limit - self.active(namespace), 0)
        return self.waiting(namespace)[:free]

    def _reserve(self, namespace: str, name: str) -> None:
        runs = self.runs.setdefault(namespace, {})
        created = runs[name][0] if name in runs else ""
        runs[name] = (created, ACTIVE)
