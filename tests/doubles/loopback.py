"""An aiohttp application served on 127.0.0.1 from an event loop in a thread of its own: how the REST
doubles answer a synchronous client in the test's own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web


class LoopbackServer:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self, build: Callable[[], web.Application]) -> str:
        """Serve the application ``build`` makes (in the server's loop) on a free port; its base URL."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(build), self._loop).result(timeout=30)
        return self.url

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _serve(self, build: Callable[[], web.Application]) -> None:
        self._runner = web.AppRunner(build())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
