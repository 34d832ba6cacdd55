"""A node agent for the test control plane: a stand-in kubelet that runs Pods as local processes.

    agent = NodeAgent(cluster.api, workdir)   # registers Node "dataops-node" (Ready) on start()
    agent.start()                             # binds unscheduled Pods to it and runs them
    agent.stop()                              # kills its processes; new Pods stay Pending from here

What it does for each Pod bound to its node (it binds Pending, unscheduled Pods itself through the
`binding` subresource, as kube-scheduler would, since no scheduler runs):

- runs the first container's `command` + `args` (with `$(VAR)` expanded) as a local process, in its own
  process group, with the agent's environment (the project's own environment stands in for the image) plus
  the container's `env` / `envFrom` (values, fieldRef, ConfigMap and Secret keys) and `workingDir`;
- writes the status back like a kubelet: `Running`, then `Succeeded` / `Failed` with the exit code in
  `containerStatuses[0].state.terminated`, its `message` read from the file at `terminationMessagePath`
  when the process wrote it during this run (or the log's end under `FallbackToLogsOnError`);
- restarts the process under `restartPolicy` `OnFailure` / `Always` (restartCount, lastState), and
  enforces `activeDeadlineSeconds` (reason `DeadlineExceeded`);
- on a Pod's graceful deletion, sends SIGTERM to its process group (SIGKILL after the grace period),
  then confirms the deletion, so Jobs' and ownerReference garbage collection's deletions finish.

What it does not do: images (ignored), volumes and mounts (no container filesystem: a path in the pod is
a path on this machine, so give each pod's `terminationMessagePath` its own file), probes, init and
sidecar containers (only the first container runs), resource limits, `kubectl logs` / `exec` (the output
is in `<workdir>/<namespace>_<pod>_<uid>.log`), and in-cluster credentials for the process.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.controlplane.cluster import die_with_parent
from tests.controlplane.kubeapi import ApiError, Json, KubeApi, WatchExpired

LOG = logging.getLogger("dataops.tests.node_agent")
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE = 4096
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0)


@dataclass
class PodProcess:
    """One Pod this agent runs: the key, the current process, and whether its deletion was asked."""

    namespace: str
    name: str
    uid: str
    popen: subprocess.Popen[bytes] | None = None
    deleting: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class NodeAgent:
    def __init__(
        self,
        api: KubeApi,
        workdir: Path,
        node_name: str = "dataops-node",
        *,
        env: Mapping[str, str] | None = None,
        bind_pending: bool = True,
    ) -> None:
        self.api = api
        self.workdir = workdir
        self.node_name = node_name
        self.base_env = dict(os.environ if env is None else env)
        self.bind_pending = bind_pending
        self._lock = threading.Lock()
        self._pods: dict[str, PodProcess] = {}
        self._finished: set[str] = set()  # uids it ran to the end: late events about them change nothing
        self._stopping = threading.Event()
        self._watch_response: requests.Response | None = None
        self._watcher: threading.Thread | None = None
        self._synced = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._watcher is not None and self._watcher.is_alive()

    def start(self, timeout: float = 30.0) -> None:
        """Registers the Node (Ready) and starts running Pods; returns once the first list is handled."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        self._stopping.clear()
        self._synced.clear()
        self._watcher = threading.Thread(
            target=self._watch_pods, name=f"node-agent-{self.node_name}", daemon=True
        )
        self._watcher.start()
        if not self._synced.wait(timeout):
            raise TimeoutError(f"node agent {self.node_name}: no pod list within {timeout:.0f} s")

    def stop(self) -> None:
        """Stops watching and kills every process it runs, writing no more status: as if the node died."""
        self._stopping.set()
        response = self._watch_response
        if response is not None:
            _interrupt(response)
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            self._watcher = None
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            pod.deleting.set()  # wakes a restart backoff
            _kill_group(pod.popen, signal.SIGKILL)
        for pod in pods:
            if pod.thread is not None:
                pod.thread.join(timeout=30)
        with self._lock:
            self._pods.clear()

    def __enter__(self) -> NodeAgent:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def pid_of(self, namespace: str, name: str) -> int | None:
        """The process id running Pod `namespace/name`, if this agent runs it now."""
        with self._lock:
            for pod in self._pods.values():
                if (pod.namespace, pod.name) == (namespace, name) and pod.popen and pod.popen.poll() is None:
                    return pod.popen.pid
        return None

    # -- the node ------------------------------------------------------------------------------------

    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": _arch(),
                    "node.kubernetes.io/instance-type": "dataops-node-agent",
                },
            },
        }
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as error:
            if error.code != 409:
                raise
        # The TaintNodesByCondition admission plugin marks a new Node not-ready; no node controller runs
        # to lift it, so the agent does.
        self.api.merge_patch(f"/api/v1/nodes/{self.node_name}", {"spec": {"taints": None}})
        now = _now()
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_kib()}Ki",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        self.api.merge_patch(
            f"/api/v1/nodes/{self.node_name}/status",
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node_name},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "NodeAgentReady",
                            "message": "the dataops test node agent runs pods as local processes",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "nodeInfo": {
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                        "kernelVersion": platform.release(),
                        "osImage": "local processes",
                        "containerRuntimeVersion": "dataops-node-agent://1",
                        "kubeletVersion": "v0.0.0-dataops-node-agent",
                        "kubeProxyVersion": "",
                        "operatingSystem": "linux",
                        "architecture": _arch(),
                    },
                }
            },
        )

    # -- the watch -----------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        while not self._stopping.is_set():
            try:
                listing = self.api.get("/api/v1/pods")
                for pod in listing["items"]:
                    self._on_pod(pod, first_sight=True)
                self._synced.set()
                version = listing["metadata"]["resourceVersion"]
                while not self._stopping.is_set():
                    response, events = self.api.watch("/api/v1/pods", version)
                    self._watch_response = response
                    if self._stopping.is_set():  # stop() may have run before the response was stored
                        response.close()
                        return
                    for event in events:
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            self._on_pod_gone(event["object"])
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._on_pod(event["object"], first_sight=False)
            except WatchExpired:
                continue
            except Exception:
                if self._stopping.is_set():
                    return
                LOG.exception("node agent %s: pod watch failed; listing again", self.node_name)
                self._stopping.wait(0.5)

    def _on_pod(self, pod: Json, first_sight: bool) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        node = spec.get("nodeName")
        if not node:
            if (
                self.bind_pending
                and not meta.get("deletionTimestamp")
                and status.get("phase") == "Pending"
                and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
            ):
                self._bind(meta)
            return
        if node != self.node_name:
            return
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            self._on_pod_deleting(pod)
            return
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        with self._lock:
            if uid in self._pods or uid in self._finished:
                return
            run = self._pods[uid] = PodProcess(meta["namespace"], meta["name"], uid)
        # A pod this agent ran before a stop() lost its process with it.
        lost = first_sight and phase == "Running"
        restarts = _restart_count(status)
        if lost and spec.get("restartPolicy", "Always") == "Never":
            message = "the node agent was stopped while this pod ran"
            self._write_terminated(pod, run, _terminated(137, "NodeAgentStopped", message, _now()), restarts)
            with self._lock:
                self._pods.pop(uid, None)
                self._finished.add(uid)
            return
        restarts += 1 if lost else 0
        run.thread = threading.Thread(
            target=self._run_pod,
            args=(pod, run, restarts),
            daemon=True,
            name=f"pod-{meta['namespace']}-{meta['name']}",
        )
        run.thread.start()

    def _bind(self, meta: Json) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.create(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", binding)
        except ApiError as error:
            if error.code not in (404, 409):  # gone, or bound meanwhile
                raise

    def _on_pod_deleting(self, pod: Json) -> None:
        meta = pod["metadata"]
        with self._lock:
            run = self._pods.get(meta["uid"])
        if run is not None and run.deleting.is_set():
            return
        if run is None:
            self._confirm_deletion(meta)
            return
        run.deleting.set()
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        threading.Thread(target=self._terminate, args=(run, meta, grace), daemon=True).start()

    def _terminate(self, run: PodProcess, meta: Json, grace: float) -> None:
        _kill_group(run.popen, signal.SIGTERM)
        if run.thread is not None:
            run.thread.join(timeout=grace or 0.1)
            if run.thread.is_alive():
                _kill_group(run.popen, signal.SIGKILL)
                run.thread.join(timeout=30)
        if not self._stopping.is_set():
            self._confirm_deletion(meta)

    def _confirm_deletion(self, meta: Json) -> None:
        try:
            self.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", grace_period=0, uid=meta["uid"]
            )
        except ApiError as error:
            if error.code not in (404, 409):
                raise

    def _on_pod_gone(self, pod: Json) -> None:
        with self._lock:
            self._finished.discard(pod["metadata"]["uid"])
            run = self._pods.get(pod["metadata"]["uid"])
        if run is not None:
            run.deleting.set()
            _kill_group(run.popen, signal.SIGKILL)

    # -- one pod -------------------------------------------------------------------------------------

    def _run_pod(self, pod: Json, run: PodProcess, restarts: int) -> None:
        try:
            self._run_pod_until_done(pod, run, restarts)
        except Exception:
            if not self._stopping.is_set():
                LOG.exception("node agent: pod %s/%s failed to run", run.namespace, run.name)
        finally:
            with self._lock:
                self._pods.pop(run.uid, None)
                if not self._stopping.is_set():
                    self._finished.add(run.uid)

    def _run_pod_until_done(self, pod: Json, run: PodProcess, restarts: int) -> None:
        spec = pod["spec"]
        container = spec["containers"][0]
        log = self.workdir / f"{run.namespace}_{run.name}_{run.uid}.log"
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if not container.get("command"):
            message = "the test node agent runs a container's `command` (images are ignored: no entrypoint)"
            self._write_terminated(pod, run, _terminated(126, "NoCommand", message, _now()), restarts)
            return
        env = self._container_env(pod, container)
        argv = [_expand(arg, env) for arg in argv]
        # As the kubelet mounts a file of its own at each container's terminationMessagePath, each pod
        # here gets a private file, substituted wherever the container names that path.
        declared = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        private = self.workdir / f"{run.namespace}_{run.name}_{run.uid}.termination-log"
        argv = [arg.replace(declared, str(private)) for arg in argv]
        env = {key: value.replace(declared, str(private)) for key, value in env.items()}
        workdir = container.get("workingDir") or str(self.workdir)
        deadline_seconds = spec.get("activeDeadlineSeconds")
        deadline = (
            None if deadline_seconds is None else time.monotonic() + deadline_seconds
        )  # across restarts
        pod_started = (pod.get("status") or {}).get("startTime") or _now()
        last_state: Json = {}
        backoff = iter(RESTART_BACKOFF)
        while True:
            started, started_wall = _now(), datetime.datetime.now(datetime.UTC).timestamp()
            with log.open("ab") as out:
                run.popen = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            if self._stopping.is_set() or run.deleting.is_set():  # stop() or a deletion came meanwhile
                _kill_group(run.popen, signal.SIGKILL)
            self._write_status(
                pod,
                run,
                {"phase": "Running", "startTime": pod_started},
                ready=True,
                state={"running": {"startedAt": started}},
                last_state=last_state,
                restarts=restarts,
            )
            reason = None
            try:
                code = run.popen.wait(
                    timeout=None if deadline is None else max(0.0, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                _kill_group(run.popen, signal.SIGKILL)
                code, reason = run.popen.wait(), "DeadlineExceeded"
            if self._stopping.is_set():
                return
            code = code if code >= 0 else 128 - code
            message = _termination_message(container, log, started_wall, code, private)
            terminated = _terminated(
                code, reason or ("Completed" if code == 0 else "Error"), message, started
            )
            terminated["containerID"] = _container_id(run.popen)
            policy = spec.get("restartPolicy", "Always")
            again = (
                reason is None
                and not run.deleting.is_set()
                and (policy == "Always" or (policy == "OnFailure" and code != 0))
            )
            if not again:
                self._write_terminated(
                    pod, run, terminated, restarts, last_state, deadline=reason is not None
                )
                return
            restarts, last_state = restarts + 1, {"terminated": terminated}
            self._write_status(
                pod,
                run,
                {"phase": "Running", "startTime": pod_started},
                ready=False,
                state={"waiting": {"reason": "CrashLoopBackOff"}},
                last_state=last_state,
                restarts=restarts,
            )
            if run.deleting.wait(next(backoff, RESTART_BACKOFF[-1])) or self._stopping.is_set():
                return

    def _write_terminated(
        self,
        pod: Json,
        run: PodProcess,
        terminated: Json,
        restarts: int,
        last_state: Json | None = None,
        deadline: bool = False,
    ) -> None:
        phase: Json = {"phase": "Succeeded" if terminated["exitCode"] == 0 and not deadline else "Failed"}
        if deadline:
            phase |= {
                "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline",
            }
        self._write_status(
            pod,
            run,
            phase,
            ready=False,
            state={"terminated": terminated},
            last_state=last_state or {},
            restarts=restarts,
        )

    def _write_status(
        self,
        pod: Json,
        run: PodProcess,
        fields: Json,
        *,
        ready: bool,
        state: Json,
        last_state: Json,
        restarts: int,
    ) -> None:
        if self._stopping.is_set():
            return
        now, spec = _now(), pod["spec"]
        done = fields["phase"] in ("Succeeded", "Failed")
        ready_condition = "True" if ready else "False"
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {
                "type": "ContainersReady",
                "status": ready_condition,
                "lastTransitionTime": now,
                **({"reason": "PodCompleted"} if done else {}),
            },
            {
                "type": "Ready",
                "status": ready_condition,
                "lastTransitionTime": now,
                **({"reason": "PodCompleted"} if done else {}),
            },
        ]
        first = spec["containers"][0]
        statuses = [
            {
                "name": first["name"],
                "image": first.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": "running" in state,
                "restartCount": restarts,
                "state": state,
                "lastState": last_state,
                **({"containerID": _container_id(run.popen)} if run.popen is not None else {}),
            }
        ]
        for other in spec["containers"][1:]:
            statuses.append(
                {
                    "name": other["name"],
                    "image": other.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "lastState": {},
                    "state": {
                        "waiting": {
                            "reason": "NotRunByNodeAgent",
                            "message": "the test node agent runs only a pod's first container",
                        }
                    },
                }
            )
        status = {
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "qosClass": "BestEffort",
            "conditions": conditions,
            "containerStatuses": statuses,
            **fields,
        }
        try:
            self.api.merge_patch(
                f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status", {"status": status}
            )
        except ApiError as error:
            if error.code != 404:  # a pod deleted meanwhile has no status to write
                raise

    def _container_env(self, pod: Json, container: Json) -> dict[str, str]:
        env = dict(self.base_env)
        env["HOSTNAME"] = pod["metadata"]["name"]
        namespace = pod["metadata"]["namespace"]
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            ref = source.get("configMapRef") or source.get("secretRef")
            data = self._object_data(namespace, "secrets" if "secretRef" in source else "configmaps", ref)
            env.update({prefix + key: value for key, value in data.items()})
        for var in container.get("env") or []:
            if "valueFrom" in var:
                value = self._value_from(pod, var["valueFrom"])
                if value is not None:
                    env[var["name"]] = value
            else:
                env[var["name"]] = _expand(var.get("value", ""), env)
        return env

    def _value_from(self, pod: Json, source: Json) -> str | None:
        if "fieldRef" in source:
            return _field(pod, source["fieldRef"]["fieldPath"])
        for kind, key in (("configmaps", "configMapKeyRef"), ("secrets", "secretKeyRef")):
            if key in source:
                data = self._object_data(pod["metadata"]["namespace"], kind, source[key])
                return data.get(source[key]["key"])
        return None  # resourceFieldRef: no resources here

    def _object_data(self, namespace: str, kind: str, ref: Json) -> dict[str, str]:
        try:
            obj = self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{ref['name']}")
        except ApiError as error:
            if error.code == 404 and ref.get("optional"):
                return {}
            raise
        if kind == "secrets":
            return {key: base64.b64decode(value).decode() for key, value in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})


def _termination_message(container: Json, log: Path, started: float, code: int, path: Path) -> str:
    try:
        if path.is_file() and path.stat().st_mtime >= started - 1:
            return path.read_text(errors="replace")[:MAX_TERMINATION_MESSAGE]
    except OSError:
        pass
    if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        lines = log.read_text(errors="replace").splitlines()[-80:]
        return "\n".join(lines)[-2048:]
    return ""


def _field(pod: Json, path: str) -> str | None:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        value = (meta.get(match.group(1)) or {}).get(match.group(2))
        return None if value is None else str(value)
    return {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }.get(path, status.get(path))


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` escapes, anything else stays."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def _kill_group(popen: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if popen is None or popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def _terminated(code: int, reason: str, message: str, started: str) -> Json:
    """A container's `state.terminated`, finished now."""
    state: Json = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": _now()}
    if message:
        state["message"] = message
    return state


def _interrupt(response: requests.Response) -> None:
    """Ends a streaming response that another thread is blocked reading (close() alone does not wake it)."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    response.close()


def _restart_count(status: Json) -> int:
    statuses = status.get("containerStatuses") or [{}]
    return int(statuses[0].get("restartCount", 0))


def _container_id(popen: subprocess.Popen[bytes] | None) -> str:
    return f"dataops-node-agent://{popen.pid if popen else 0}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 8 * 1024 * 1024


def status_of(pod: Json) -> Any:
    """The pod's first container state (for tests): {'running': ...} / {'terminated': ...} / {}."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0].get("state", {})
