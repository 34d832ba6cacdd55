"""The controller's Kubernetes client against a loopback HTTP server: errors, token rotation, paging.

The real API server is exercised by the e2e tests; here the answers a test cannot easily get from it
(a 401 after the kubelet rotated the token, a plain-text 429, a dead port) come from a small server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lightkube.config.client_adapter import BearerTokenFileAuth

from controller.kube import Credentials, Kube, KubeError
from controller.operator import Runtime, Written, _is_at_least, _nothing_new, digest, forget
from controller.settings import settings_from_env
from tests.controlplane.cluster import free_port

pytestmark = pytest.mark.unit


class Server:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # method, path with query, Authorization
        self.token = "Bearer new"
        self.answer: dict[str, Any] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization", "")))
        if request.headers.get("Authorization") != self.token:
            return web.json_response(
                {"kind": "Status", "code": 401, "message": "Unauthorized", "reason": "Unauthorized"},
                status=401,
            )
        if self.answer is not None:
            return web.Response(
                status=self.answer["status"], text=self.answer["text"], headers=self.answer.get("headers")
            )
        if request.path.endswith("/jobs") and request.method == "GET":
            page = request.query.get("continue")
            items = [{"metadata": {"name": "b"}}] if page else [{"metadata": {"name": "a"}}]
            return web.json_response({"items": items, "metadata": {"continue": "" if page else "next"}})
        return web.json_response({"metadata": {"name": "x"}, "echo": await request.text()})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Kube, Server, Path]]:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    token = tmp_path / "token"
    token.write_text("old")
    url = f"http://127.0.0.1:{port}"
    kube = Kube(url, None, Credentials(BearerTokenFileAuth(str(token)), url))
    yield kube, server, token
    await kube.close()
    await runner.cleanup()


async def test_a_rotated_token_is_read_again_after_a_401_and_the_request_repeated(
    served: tuple[Kube, Server, Path],
) -> None:
    kube, server, token = served
    server.token = "Bearer old"
    assert await kube.get("Job", "x", "ns") is not None
    token.write_text("new")  # the kubelet rotates the token; the server stops taking the old one
    server.token = "Bearer new"
    assert await kube.get("Job", "x", "ns") is not None
    assert [auth for _, _, auth in server.seen] == ["Bearer old", "Bearer old", "Bearer new"]


async def test_a_refused_token_that_stays_refused_is_a_401_error(served: tuple[Kube, Server, Path]) -> None:
    kube, server, _ = served
    server.token = "Bearer something-else"
    with pytest.raises(KubeError) as caught:
        await kube.get("Job", "x", "ns")
    assert caught.value.status == 401
    assert len(server.seen) == 2  # tried once more with whatever the file says, not in a loop


async def test_a_listing_follows_its_continue_tokens_and_selects_by_label(
    served: tuple[Kube, Server, Path],
) -> None:
    kube, server, token = served
    token.write_text("new")
    items = await kube.list("Job", "team-a", {"dataops.io/run": "r1"})
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    paths = [p for _, p, _ in server.seen if "continue" in p]
    assert paths and "labelSelector=dataops.io/run%3Dr1" in paths[0]


async def test_a_plain_text_429_keeps_its_retry_after(served: tuple[Kube, Server, Path]) -> None:
    kube, server, token = served
    token.write_text("new")
    server.answer = {
        "status": 429,
        "text": "Too many requests, please try again later.\n",
        "headers": {"Retry-After": "7"},
    }
    with pytest.raises(KubeError) as caught:
        await kube.patch_status("PipelineRun", "r", "ns", {"phase": "Validating"}, "12")
    assert (caught.value.status, caught.value.retry_after, caught.value.temporary) == (429, 7.0, True)
    assert str(caught.value) == "Too many requests, please try again later."


async def test_a_status_answer_gives_its_code_message_and_retry_after(
    served: tuple[Kube, Server, Path],
) -> None:
    kube, server, token = served
    token.write_text("new")
    status = {
        "kind": "Status",
        "code": 409,
        "reason": "Conflict",
        "message": 'Operation cannot be fulfilled on pipelineruns "r": the object has been modified',
        "details": {"retryAfterSeconds": 2},
    }
    server.answer = {"status": 409, "text": json.dumps(status)}
    with pytest.raises(KubeError) as caught:
        await kube.patch("PipelineRun", "r", "ns", {"metadata": {"finalizers": ["x"]}})
    assert caught.value.status == 409 and caught.value.retry_after == 2.0
    assert "the object has been modified" in str(caught.value)


async def test_a_create_that_exists_returns_the_object_there(served: tuple[Kube, Server, Path]) -> None:
    kube, server, token = served
    token.write_text("new")
    server.answer = {
        "status": 409,
        "text": json.dumps({"kind": "Status", "code": 409, "reason": "AlreadyExists"}),
    }
    with pytest.raises(KubeError):  # the GET that follows answers 409 too here: it is raised, not hidden
        await kube.create_if_absent({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}})
    assert [m for m, _, _ in server.seen][-2:] == ["POST", "GET"]


async def test_a_dead_port_is_a_temporary_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    kube = Kube(url, None, Credentials(None, url))
    with pytest.raises(KubeError) as caught:
        await kube.get("Pod", "p", "ns")
    await kube.close()
    assert caught.value.status == 503 and caught.value.temporary


def test_an_event_showing_our_last_write_or_a_metadata_edit_brings_nothing_new() -> None:
    status = {"phase": "Validating", "stages": [{"name": "validate", "state": "Running"}]}
    last = Written("7", digest(status), 1)
    body = {
        "metadata": {"resourceVersion": "9", "generation": 1, "labels": {"x": "y"}},
        "status": dict(status),
    }
    assert _nothing_new(body, last)  # the finalizer's echo, a label edited: same spec, same status
    assert not _nothing_new({**body, "metadata": {**body["metadata"], "generation": 2}}, last)  # spec changed
    assert not _nothing_new({**body, "metadata": {**body["metadata"], "deletionTimestamp": "t"}}, last)
    older = {**body, "status": {"phase": "Pending"}}
    assert not _nothing_new(older, last) and not _is_at_least(older, last)  # stale: planned from a GET


async def test_a_deleted_run_leaves_nothing_in_the_controller() -> None:
    """Every per-run record goes with the run: its lock, last write, timer, phase and admission entry."""
    rt = Runtime(settings_from_env({}), Kube("https://127.0.0.1:1", None, Credentials(None, "")))
    for name in ("gone", "busy"):
        key = f"ns/{name}"
        async with rt.locks.hold(key):
            pass
        rt.written[key] = Written("1", 0, 1)
        rt.timers[key] = asyncio.get_running_loop().call_later(3600, lambda: None)
        rt.phases[key] = "Running"
        # finished: forgetting it wakes no queued run (which would reconcile against no API server)
        meta = {"namespace": "ns", "name": name, "creationTimestamp": "t"}
        rt.admission.observe({"metadata": meta, "status": {"phase": "Succeeded"}})
    held, done = asyncio.Event(), asyncio.Event()

    async def reconciling() -> None:  # a reconcile of busy is under way, another one waits for it
        async with rt.locks.hold("ns/busy"):
            held.set()
            await done.wait()

    tasks = [asyncio.create_task(reconciling()), asyncio.create_task(reconciling())]
    await held.wait()

    forget(rt, "ns", "gone")
    forget(rt, "ns", "busy")

    assert set(rt.locks) == {"ns/busy"}  # its reconciles still hold and await it: dropped after the last
    assert not rt.written and not rt.timers and not rt.phases and not rt.admission.runs["ns"]
    done.set()
    await asyncio.gather(*tasks)
    forget(rt, "ns", "busy")
    assert not rt.locks
