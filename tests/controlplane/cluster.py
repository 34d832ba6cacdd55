"""A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver, kube-controller-manager.

    bin_dir = build_control_plane()                 # runs build.sh (warm: well under a second)
    with Cluster(bin_dir, tmp_path) as cluster:     # certificates, free ports, readiness waits
        cluster.api.get("/api/v1/namespaces")       # as admin (system:masters)
        cluster.kubectl("get", "jobs", "-A")        # kubectl at the server's version
        cluster.service_account_kubeconfig("ns", "sa")  # a kubeconfig with exactly that SA's RBAC
    # every process is gone here, also when start() failed half way

The API server authenticates client certificates (one CA) and ServiceAccount tokens (its own signing
key), authorizes with RBAC, and has no kubelet: the Pods that controllers create stay Pending until a
node agent (node_agent.py) runs them. Each process's output is in `<workdir>/logs/<name>.log`; the API
server's audit log of ServiceAccount requests (AUDIT_POLICY) in `Cluster.audit_log`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import requests
import yaml

from tests.controlplane.kubeapi import ApiError, Credentials, KubeApi
from tests.controlplane.pki import Pki, write_pki

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
SERVICE_CIDR = "10.0.0.0/24"
# Controllers the tests rely on; the others (nodes, volumes, cloud, certificates...) have nothing to do
# without kubelets and would only add noise.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "deployment-controller",
    "replicaset-controller",
    "ttl-after-finished-controller",
    "root-ca-certificate-publisher-controller",
    "resourcequota-controller",
)

# The API server's audit log (`Cluster.audit_log`, JSON lines): who made which request, at Metadata level (no
# bodies), for ServiceAccounts outside kube-system only, so that it costs next to nothing while it tells exactly
# which verbs a controller running under its chart's ServiceAccount used (tests/e2e/test_rbac_audit.py).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}

T = TypeVar("T")


class ControlPlaneUnavailable(Exception):
    """The control plane cannot be built here: a tool is missing (the message says which, and how to get it)."""


class ControlPlaneError(Exception):
    """The control plane failed to build or start (the message holds the end of the relevant log)."""


def build_control_plane(timeout: float = 3600.0) -> Path:
    """Runs build.sh (idempotent: instant when the binaries are cached) and returns the folder holding them."""
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable(
            "the end-to-end tests build their Kubernetes control plane with Go, and `go` is not on PATH: install "
            "Go >= 1.21 (https://go.dev/doc/install; a Go older than 1.26 fetches the 1.26 toolchain that etcd "
            "and helm ask for through the module proxy), make sure GOPROXY reaches the Go module proxy, then run "
            "`bash tests/controlplane/build.sh` (about 5-25 min once, then instant)"
        )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}")
    bin_dir = Path(lines[-1])
    missing = [name for name in BINARIES if not (bin_dir / name).exists()]
    if missing:
        raise ControlPlaneError(f"{BUILD_SCRIPT} printed {bin_dir}, which lacks {', '.join(missing)}")
    return bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], T | bool | None],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
) -> T:
    """Polls `condition` until it returns something truthy, and returns that; `check` may raise to give up early.

    Raises TimeoutError naming `what` and the last exception the condition raised, if any."""
    deadline = time.monotonic() + timeout
    delay, last_error = 0.02, ""
    while True:
        if check is not None:
            check()
        try:
            result = condition()
            if result:
                return result  # type: ignore[return-value]  # truthy: not None, not False
        except Exception as error:  # reported if the wait times out
            last_error = f" (last error: {error})"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{last_error}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class ManagedProcess:
    """A server process in its own process group, logged to a file, killed if the test process dies."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ControlPlaneError(
                f"{self.name} exited with code {code}; end of {self.log}:\n{_tail(self.log.read_text(errors='replace'))}"
            )

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (the state is thrown away: no need to wait long)."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # The group too: whatever the server started must not outlive it.
        _signal_group(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class Cluster:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback; see the module docstring."""

    def __init__(
        self, bin_dir: Path, workdir: Path, *, controller_manager: bool = True, ready_timeout: float = 60.0
    ) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.with_controller_manager = controller_manager
        self.ready_timeout = ready_timeout
        self.processes: list[ManagedProcess] = []
        self.apiserver_ready_seconds = 0.0
        self.port = 0
        self.server = ""
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.audit_log = workdir / "logs" / "audit.log"  # JSON lines; see AUDIT_POLICY
        self.pki: Pki | None = None
        self._api: KubeApi | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        while self.processes:
            self.processes.pop().stop()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki = write_pki(self.workdir / "pki")
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"

        etcd = self._launch(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # a throwaway store: durability buys nothing here
                "--log-level=warn",
            ],
        )
        wait_until(
            lambda: _http_ok(f"{etcd_url}/health"), self.ready_timeout, "etcd /health", etcd.check_alive
        )

        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False), encoding="utf-8")
        started = time.monotonic()
        apiserver = self._launch(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",  # no loopback address in the kubernetes Endpoints
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",  # written before the response: a test reads it right after
            ],
        )
        self._write_kubeconfig(
            self.kubeconfig,
            "admin",
            {"client-certificate-data": _b64(pki.admin.cert), "client-key-data": _b64(pki.admin.key)},
        )
        self._api = KubeApi(self.server, pki.ca.cert, Credentials(cert=(pki.admin.cert, pki.admin.key)))
        wait_until(self._apiserver_ready, self.ready_timeout, "kube-apiserver /readyz", apiserver.check_alive)
        self.apiserver_ready_seconds = time.monotonic() - started

        if self.with_controller_manager:
            kcm_config = self.workdir / "controller-manager.kubeconfig"
            self._write_kubeconfig(
                kcm_config,
                "system:kube-controller-manager",
                {
                    "client-certificate-data": _b64(pki.controller_manager.cert),
                    "client-key-data": _b64(pki.controller_manager.key),
                },
            )
            kcm = self._launch(
                "kube-controller-manager",
                [
                    f"--kubeconfig={kcm_config}",
                    "--secure-port=0",  # no health/metrics server: readiness is seen through the API
                    "--leader-elect=false",
                    "--use-service-account-credentials=true",  # each controller under its own RBAC, as kubeadm does
                    f"--controllers={','.join(CONTROLLERS)}",
                    f"--root-ca-file={pki.ca.cert}",
                    f"--service-account-private-key-file={pki.service_account_key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",  # the default 20 qps throttles bursts of Jobs
                    "--concurrent-job-syncs=10",
                    "--concurrent-cron-job-syncs=10",
                ],
            )
            wait_until(
                lambda: self.api.exists("/api/v1/namespaces/default/serviceaccounts/default"),
                self.ready_timeout,
                "the controller manager to create the default ServiceAccount",
                kcm.check_alive,
            )

    def _launch(self, name: str, args: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            name, [str(self.bin_dir / name), *args], self.workdir / "logs" / f"{name}.log"
        )
        self.processes.append(process)
        return process

    def _apiserver_ready(self) -> bool:
        return self.api.request("GET", "/readyz") is not None

    # -- clients -------------------------------------------------------------------------------------

    @property
    def api(self) -> KubeApi:
        """A client as the cluster admin (group system:masters)."""
        if self._api is None:
            raise ControlPlaneError("the cluster is not running")
        return self._api

    def check_alive(self) -> None:
        """Raises ControlPlaneError (with the log's end) if a control-plane process has died."""
        for process in self.processes:
            process.check_alive()

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl (the server's version) against this cluster; check `returncode` yourself."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)

    def helm(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600) -> str:
        """A token for ServiceAccount `namespace/name`, from the TokenRequest API."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        response = self.api.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        token: str = response["status"]["token"]
        return token

    def service_account_api(self, namespace: str, name: str) -> KubeApi:
        """A client with exactly the RBAC of ServiceAccount `namespace/name`."""
        return self.api.with_token(self.service_account_token(namespace, name))

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig authenticating as ServiceAccount `namespace/name` (default namespace `namespace`),
        for running a program (kubectl, the operator) with exactly that account's RBAC."""
        path = path or self.workdir / "kubeconfigs" / f"{namespace}.{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        token = self.service_account_token(namespace, name, expiration_seconds)
        self._write_kubeconfig(
            path, f"system:serviceaccount:{namespace}:{name}", {"token": token}, namespace=namespace
        )
        return path

    def make_cronjob_due(self, namespace: str, name: str, missed_since: float = 3600.0) -> None:
        """Makes the real CronJob controller start CronJob `namespace/name` now rather than at its next
        schedule time: `status.lastScheduleTime` is moved `missed_since` seconds back, which the controller
        reads as missed schedules, and it starts the most recent one at once (as after a controller outage;
        `startingDeadlineSeconds` still applies). The window must hold a schedule time of the CronJob."""
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=missed_since)
        self.api.merge_patch(
            f"/apis/batch/v1/namespaces/{namespace}/cronjobs/{name}/status",
            {"status": {"lastScheduleTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")}},
        )

    def _write_kubeconfig(
        self, path: Path, user: str, credentials: dict[str, str], namespace: str = "default"
    ) -> None:
        assert self.pki is not None
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "dataops-test",
            "clusters": [
                {
                    "name": "dataops-test",
                    "cluster": {"server": self.server, "certificate-authority-data": _b64(self.pki.ca.cert)},
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [
                {
                    "name": "dataops-test",
                    "context": {"cluster": "dataops-test", "user": user, "namespace": namespace},
                }
            ],
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)


_PRCTL: Any
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # loaded now: no dlopen between fork and exec
except (OSError, AttributeError):
    _PRCTL = None
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the thread that started it ends, so no
    server outlives a test process killed outright. (Start servers from a thread that outlives them.)"""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _http_ok(url: str) -> bool:
    with requests.Session() as session:
        session.trust_env = False  # loopback: never through a proxy from the environment
        return session.get(url, timeout=2).status_code == 200


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


__all__ = [
    "ApiError",
    "Cluster",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "build_control_plane",
    "free_port",
    "wait_until",
]
