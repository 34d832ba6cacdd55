"""Benchmark the controller on the real control plane: a burst, a steady load, memory, a soak.

Run it from the repository root with the project's virtualenv (``make bench`` runs it too)::

    .venv/bin/python tests/bench/bench_controller.py          # 1,000 / 15 per s x 40 s / 5,000 / 5,000
    .venv/bin/python tests/bench/bench_controller.py --burst 200 --steady-seconds 10 --finished 1000 \
        --soak-runs 500

What it does, on a fresh etcd + kube-apiserver + kube-controller-manager (``tests/controlplane``) with
the CRDs applied, the controller as its own process (``python -m controller controller``, no namespace
limit). Each namespace has the stage pods' ServiceAccount, so the Job controller creates every Job's
pod, as in a cluster; no node agent runs them, so in steps 2-3 every run waits at its first stage:

1. reference: the API server alone, the same asyncio client creating the same PipelineRuns plus one
   Job each (the least a controller must do), runs per minute; the controller's figures are quoted
   against it, since single timings on these machines are noisy;
2. reference: a bare kopf handler that only creates the first Job and sets the phase
   (tests/bench/bare_kopf.py, the issue's yardstick), through the same burst and steady load as 3;
3. the controller: a burst of ``--burst`` PipelineRuns created at once (32 requests in flight) -> runs
   per minute until every one has its first stage Job (seen through a watch on Jobs); then, in its own
   namespace, ``--rate`` runs per second for ``--steady-seconds`` -> p50 / p99 latency from each run's
   create call returning to its Job's ADDED event. Each measure starts once the Job controller has made
   the previous one's pods, on a quiet cluster; the burst's runs stay in the controller meanwhile;
4. memory: ``--finished`` runs with a finished status in the cluster, a fresh controller started,
   its resident memory (VmRSS) sampled every 5 s for ``--soak-seconds``: the curve and the last value;
5. soak: ``--soak-runs`` runs through all three stages (an instant kubelet marks each pod Succeeded,
   the real Job controller completes the Job), ``--window`` in flight, finished runs deleted after a
   30 s TTL: runs per minute and the controller's memory against the runs finished so far.

Figures only: this file is not a test module (pytest does not collect it). Exit 0 when every run got
its Job and the soak finished, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.controlplane.cluster import Cluster, build_control_plane, free_port  # noqa: E402
from tests.controlplane.kubeapi import KubeApi  # noqa: E402

console = Console()
RUNS = "/apis/dataops.io/v1alpha1/namespaces/{ns}/pipelineruns"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
SPEC: dict[str, Any] = {
    "source": {"uri": "/data/in.csv", "columns": [{"name": "id", "type": "INT64"}]},
    "load": {"table": "raw.items"},
    "transform": {"output": {"table": "tds.items"}},
}


def run_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": SPEC,
    }


def job_doc(name: str) -> dict[str, Any]:
    """What the controller creates for a run's first stage, near enough, for the reference."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-validate-1", "labels": {"dataops.io/run": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "stage", "image": "worker:bench", "args": ["validate"]}],
                }
            },
        },
    }


class Follower:
    """Every object of a collection, listed then watched, handed to ``seen`` from a thread of its own.

    A stream that ends (a server timeout, a 429 while the API server warms up) is opened again from a
    fresh listing: objects made meanwhile come from the listing.
    """

    def __init__(
        self, api: KubeApi, path: str, types: tuple[str, ...], seen: Callable[[dict[str, Any]], None]
    ) -> None:
        self.api, self.path, self.types, self.seen = api, path, types, seen
        self._closed = threading.Event()
        self._response: Any = None
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                listing = self.api.get(self.path)
                for item in listing["items"]:
                    self.seen(item)
                self._response, events = self.api.watch(
                    self.path, listing["metadata"]["resourceVersion"], timeout_seconds=600
                )
                for event in events:
                    if event["type"] in self.types:
                        self.seen(event["object"])
            except Exception:
                time.sleep(0.5)

    def close(self) -> None:
        self._closed.set()
        if self._response is not None:
            self._response.close()


class JobWatch:
    """Records when each Job of a namespace is first seen (client clock), from one watch stream."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self._follower = Follower(api, JOBS.format(ns=namespace), ("ADDED",), self._saw)

    def _saw(self, job: dict[str, Any]) -> None:
        run = job["metadata"].get("labels", {}).get("dataops.io/run", "")
        with self.lock:
            self.seen.setdefault(run, time.monotonic())

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def close(self) -> None:
        self._follower.close()


def create_all(cluster: Cluster, namespace: str, names: list[str], with_job: bool = False) -> None:
    """Create the runs (and a Job each) with 32 requests in flight: an asyncio client, so that the
    bench's own CPU stays small beside the controller's on these 2 cores."""
    assert cluster.pki is not None
    context = ssl.create_default_context(cafile=str(cluster.pki.ca.cert))
    context.load_cert_chain(str(cluster.pki.admin.cert), str(cluster.pki.admin.key))

    async def all_of_them() -> None:
        connector = aiohttp.TCPConnector(ssl=context, limit=32)
        async with aiohttp.ClientSession(connector=connector) as session:
            slots = asyncio.Semaphore(32)

            async def post(path: str, doc: dict[str, Any]) -> None:
                async with session.post(cluster.server + path, json=doc) as response:
                    if response.status != 201:
                        raise RuntimeError(f"POST {path}: {response.status} {await response.text()}")

            async def one(name: str) -> None:
                async with slots:
                    await post(RUNS.format(ns=namespace), run_doc(name))
                    if with_job:
                        await post(JOBS.format(ns=namespace), job_doc(name))

            await asyncio.gather(*(one(n) for n in names))

    asyncio.run(all_of_them())


def namespace(api: KubeApi, name: str) -> str:
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # The stage pods' own ServiceAccount (controller.stageServiceAccount), as a tenant namespace has
    # it: the Job controller then creates each Job's pod, a load on the API server a cluster has too.
    api.create(
        f"/api/v1/namespaces/{name}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dataops-worker"}},
    )
    return name


def wait(what: str, probe: Callable[[], bool], timeout: float, every: float = 0.05) -> float:
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise TimeoutError(what)
        time.sleep(every)
    return time.monotonic()


def _spawn(
    cluster: Cluster, argv: list[str], namespaces: list[str], log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """A Python module run against the cluster (``argv`` after ``python -m``), watching ``namespaces``."""
    environment = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), PYTHONPATH=str(ROOT), **env)
    args = [a for ns in namespaces for a in ("--namespace", ns)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *argv, *args],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def start_controller(
    cluster: Cluster, namespaces: list[str], log: Path, metrics_port: int = 0, **env_extra: str
) -> subprocess.Popen[bytes]:
    argv = ["controller", "controller", "--standalone", "--metrics-port", str(metrics_port)]
    argv += ["--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
    env = {"DATAOPS_WORKER_IMAGE": "worker:bench", "DATAOPS_MAX_RUNNING_PER_NAMESPACE": "0", **env_extra}
    return _spawn(cluster, argv, namespaces, log, **env)


PODS = "/api/v1/namespaces/{ns}/pods"


class InstantKubelet:
    """For the soak: every pod of a namespace succeeds as soon as it is seen (its status written as a
    kubelet would, exit 0), so the real Job controller completes each stage Job and runs flow through
    all their stages with no process started."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.done: set[str] = set()
        self._pool = ThreadPoolExecutor(8)
        self._follower = Follower(api, PODS.format(ns=namespace), ("ADDED", "MODIFIED"), self._see)

    def _see(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if name in self.done or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        self.done.add(name)
        self._pool.submit(self._succeed, pod)

    def _succeed(self, pod: dict[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        containers = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "message": "{}",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
            for c in pod["spec"]["containers"]
        ]
        try:
            self.api.merge_patch(
                PODS.format(ns=self.namespace) + f"/{pod['metadata']['name']}/status",
                {"status": {"phase": "Succeeded", "startTime": now, "containerStatuses": containers}},
            )
        except Exception:  # a pod deleted meanwhile (its run's TTL)
            return

    def close(self) -> None:
        self._follower.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def unfinished(api: KubeApi, namespace: str) -> int:
    """Runs of the namespace not Succeeded or Failed, from the API server (not the controller's word)."""
    runs = api.get(RUNS.format(ns=namespace))["items"]
    return sum(1 for r in runs if (r.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_bare_kopf(cluster: Cluster, namespaces: list[str], log: Path) -> subprocess.Popen[bytes]:
    argv = ["kopf", "run", "--standalone", str(ROOT / "tests/bench/bare_kopf.py")]
    return _spawn(cluster, argv, namespaces, log)


def settled(api: KubeApi, namespace: str, jobs: int, timeout: float = 300) -> None:
    """Wait until the Job controller has made every Job's pod: the next measure starts on a quiet cluster."""
    wait(
        "the Job controller to catch up",
        lambda: len(api.get(PODS.format(ns=namespace) + "?limit=0")["items"]) >= jobs,
        timeout,
        every=1.0,  # a listing of every pod: not a load to add while the Job controller catches up
    )
    time.sleep(2)


def burst_rate(cluster: Cluster, ns: str, n: int) -> float | None:
    """``n`` runs created at once -> runs per minute until every one has its first Job; None if not all."""
    watch = JobWatch(cluster.api, ns)
    t0 = time.monotonic()
    create_all(cluster, ns, [f"b{i:05d}" for i in range(n)])
    try:
        end = wait("burst", lambda: watch.count() >= n, 900)
    except TimeoutError:
        console.print(f"burst: only {watch.count()} of {n} Jobs", highlight=False)
        return None
    finally:
        watch.close()
    settled(cluster.api, ns, n)
    return n / ((end - t0) / 60)


def steady_latency(cluster: Cluster, ns: str, rate: float, seconds: float) -> list[float] | None:
    """``rate`` runs per second for ``seconds`` -> each run's ms from its create call's return to its
    Job's ADDED event, sorted; None if some run got no Job."""
    api = cluster.api
    watch = JobWatch(api, ns)
    total = int(rate * seconds)
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for i in range(total):
            due = t0 + i / rate
            time.sleep(max(0.0, due - time.monotonic()))
            name = f"s{i:05d}"

            def send(n: str = name) -> None:
                api.create(RUNS.format(ns=ns), run_doc(n))
                sent[n] = time.monotonic()

            pool.submit(send)
    try:
        wait("steady", lambda: watch.count() >= total, 300)
    except TimeoutError:
        console.print(f"steady: only {watch.count()} of {total} Jobs", highlight=False)
        return None
    finally:
        watch.close()
    settled(api, ns, total)
    return sorted((watch.seen[n] - sent[n]) * 1000 for n in sent)


def measure(
    cluster: Cluster,
    label: str,
    start: Callable[[list[str]], subprocess.Popen[bytes]],
    burst: int,
    rate: float,
    seconds: float,
) -> tuple[float | None, list[float] | None]:
    """One process under test (``start`` given its namespaces): its burst rate, then its steady latencies,
    each in a namespace of its own."""
    burst_ns = namespace(cluster.api, f"bench-{label}-burst")
    steady_ns = namespace(cluster.api, f"bench-{label}-steady")
    proc = start([burst_ns, steady_ns])
    time.sleep(10)  # it is up and watching
    try:
        return burst_rate(cluster, burst_ns, burst), steady_latency(cluster, steady_ns, rate, seconds)
    finally:
        stop(proc)


def _latencies(lat: list[float] | None) -> str:
    if not lat:
        return "not every run got its Job"
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return f"p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms, max {lat[-1]:.0f} ms"


def main(
    burst: Annotated[int, typer.Option(help="Runs created at once")] = 1000,
    rate: Annotated[float, typer.Option(help="Runs per second in the steady load")] = 15.0,
    steady_seconds: Annotated[float, typer.Option(help="Length of the steady load")] = 40.0,
    finished: Annotated[int, typer.Option(help="Finished runs in the cluster for the memory figure")] = 5000,
    soak_seconds: Annotated[float, typer.Option(help="How long memory is sampled")] = 90.0,
    soak_runs: Annotated[
        int, typer.Option(help="Runs flowing through every stage in the soak (0: none)")
    ] = 5000,
    window: Annotated[int, typer.Option(help="Soak runs in flight at most")] = 200,
) -> None:
    bin_dir = build_control_plane()
    work = Path(tempfile.mkdtemp(prefix="bench-controller-"))
    ok = True
    with Cluster(bin_dir, work) as cluster:
        api = cluster.api
        done = cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        assert done.returncode == 0, done.stderr
        for crd in ("pipelineruns.dataops.io", "ingestionsources.dataops.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        rows: list[tuple[str, str, str]] = []

        # 1. The reference: the API server alone, creates of a run and its Job.
        ref_ns = namespace(api, "bench-reference")
        names = [f"r{i:05d}" for i in range(burst)]
        t0 = time.monotonic()
        create_all(cluster, ref_ns, names, with_job=True)
        ref_rate = burst / ((time.monotonic() - t0) / 60)
        rows.append(("reference: API server alone, run + Job creates", f"{ref_rate:,.0f} runs/min", ""))

        # 2. The second reference: a bare kopf handler (Job + phase), its burst and steady load.
        bare_rate, bare_lat = measure(
            cluster,
            "bare",
            lambda namespaces: start_bare_kopf(cluster, namespaces, work / "bare-kopf.log"),
            burst,
            rate,
            steady_seconds,
        )
        ok = ok and bare_rate is not None and bare_lat is not None
        rows.append(
            (
                f"reference: a bare kopf handler (Job + phase), burst of {burst:,}",
                f"{bare_rate or 0:,.0f} runs/min",
                f"{(bare_rate or 0) / ref_rate:.2f}x the API server alone",
            )
        )
        rows.append(
            (
                f"reference: a bare kopf handler, {rate:g} runs/s for {steady_seconds:g} s",
                _latencies(bare_lat),
                "",
            )
        )

        # 3. The controller: the burst, then the steady load once the cluster is quiet again.
        log = work / "controller.log"
        ours, lat = measure(
            cluster,
            "ours",
            lambda namespaces: start_controller(cluster, namespaces, log),
            burst,
            rate,
            steady_seconds,
        )
        ok = ok and ours is not None and lat is not None
        rows.append(
            (
                f"burst: {burst:,} runs at once -> first stage Job",
                f"{ours or 0:,.0f} runs/min",
                f"{(ours or 0) / ref_rate:.2f}x the API server alone,"
                f" {(ours or 0) / (bare_rate or 1):.2f}x the bare kopf handler",
            )
        )
        rows.append(
            (
                f"steady: {rate:g} runs/s for {steady_seconds:g} s -> first stage Job",
                _latencies(lat),
                "",
            )
        )

        # 4. Memory with finished runs.
        mem_ns = namespace(api, "bench-finished")
        names = [f"f{i:05d}" for i in range(finished)]

        def finish(name: str) -> None:
            api.create(RUNS.format(ns=mem_ns), run_doc(name))
            api.merge_patch(
                RUNS.format(ns=mem_ns) + f"/{name}/status",
                {
                    "status": {
                        "phase": "Succeeded",
                        "reason": "Succeeded",
                        "message": "all stages succeeded",
                        "completionTime": "2026-01-01T00:00:00Z",
                        "stages": [
                            {"name": s, "state": "Succeeded", "attempt": 1} for s in ("validate", "load")
                        ],
                    }
                },
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(finish, names))
        proc = start_controller(cluster, [mem_ns], log)
        curve: list[tuple[float, float]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < soak_seconds:
            time.sleep(5)
            curve.append((time.monotonic() - t0, rss_mb(proc.pid)))
        stop(proc)
        rows.append(
            (
                f"memory: controller RSS with {finished:,} finished runs",
                f"{curve[-1][1]:.0f} MB",
                "curve: " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in curve),
            )
        )

        # 5. The soak: runs flowing through all their stages, with a TTL as production has one.
        if soak_runs:
            ok = soak(cluster, work / "soak.log", soak_runs, window, rows) and ok

    table = Table(title="controller on the real control plane (no node agent)")
    for col in ("measure", "figure", "notes"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(json.dumps({"rows": rows}))
    raise typer.Exit(0 if ok else 1)


def soak(cluster: Cluster, log: Path, runs: int, window: int, rows: list[tuple[str, str, str]]) -> bool:
    """``runs`` runs through validate, load and transform, at most ``window`` in flight, finished runs
    deleted 30 s after they end (controller.finishedTTLSeconds): the controller's memory every 10 s
    against the runs finished so far. Levelling off means no per-run state outlives its run."""
    api = cluster.api
    ns = namespace(api, "bench-soak")
    proc = start_controller(cluster, [ns], log, DATAOPS_FINISHED_TTL_SECONDS="30")
    kubelet = InstantKubelet(api, ns)
    time.sleep(10)
    curve: list[tuple[float, int, float]] = []
    created, t0, last_sample, last_progress, done = 0, time.monotonic(), 0.0, time.monotonic(), 0
    try:
        while done < runs:
            finished = created - unfinished(api, ns)
            if finished > done:
                done, last_progress = finished, time.monotonic()
            room = min(window - (created - done), runs - created)
            if room > 0:
                create_all(cluster, ns, [f"k{i:05d}" for i in range(created, created + room)])
                created += room
                last_progress = time.monotonic()
            now = time.monotonic()
            if now - last_sample >= 10:
                curve.append((now - t0, done, rss_mb(proc.pid)))
                last_sample = now
                console.print(
                    f"soak {now - t0:5.0f}s  {done:5d} finished  {curve[-1][2]:4.0f} MB", highlight=False
                )
            if now - last_progress > 300:
                raise TimeoutError(f"no run finished for 5 minutes ({done} of {runs})")
            if room <= 0:
                time.sleep(1)
        curve.append((time.monotonic() - t0, done, rss_mb(proc.pid)))
    except TimeoutError as exc:
        rows.append(("soak", str(exc), ""))
        return False
    finally:
        kubelet.close()
        stop(proc)
    minutes = curve[-1][0] / 60
    tenth = curve[max(0, len(curve) // 10)][2]
    rows.append(
        (
            f"soak: {runs:,} runs through 3 stages, {window} in flight, TTL 30 s",
            f"{runs / minutes:,.0f} runs/min; RSS {curve[-1][2]:.0f} MB at the end",
            f"RSS at 10% of the soak {tenth:.0f} MB, max {max(m for _, _, m in curve):.0f} MB; curve "
            + ", ".join(f"{d}:{m:.0f}" for _, d, m in curve[:: max(1, len(curve) // 12)]),
        )
    )
    return True


if __name__ == "__main__":
    typer.run(main)
