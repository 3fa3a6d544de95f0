"""An aiohttp app served on 127.0.0.1 from its own thread, with scripted faults in front of it.

    server = LoopbackServer(app)            # app: aiohttp.web.Application with the vendor's routes
    with server:                            # starts on a free port; server.url is http://127.0.0.1:<port>
        server.faults.add("/prompt", Fault.status(429, headers={"Retry-After": "1"}))
        server.faults.add("/prompt", Fault.status(500, text="boom"))
        ...                                 # the third request to /prompt reaches the real handler

A fault answers one request to a path prefix, in order, before the vendor's handler sees it; `server.log` lists
(method, path) of every request, faults included, so a test counts what the client really sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    kind: str  # status | malformed | truncate | drop | delay
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0

    @classmethod
    def status(cls, status: int, *, json_body: Any = None, text: str | None = None,
               headers: dict[str, str] | None = None) -> "Fault":
        """An error answer as the vendor gives it (JSON body, or plain text)."""
        if json_body is not None:
            body, ctype = json.dumps(json_body).encode(), "application/json"
        else:
            body, ctype = (text or "").encode(), "text/plain; charset=utf-8"
        return cls("status", status, {"Content-Type": ctype, **(headers or {})}, body)

    @classmethod
    def malformed(cls, status: int = 200) -> "Fault":
        """A JSON content type with a body that is not JSON."""
        return cls("malformed", status, {"Content-Type": "application/json"}, b"{\"images\": [\"iVBOR")

    @classmethod
    def truncate(cls) -> "Fault":
        """Headers promising more body than is sent, then the connection closes."""
        return cls("truncate", 200, {"Content-Type": "application/json"}, b"{\"data\": [{\"b64_json\": \"iVBO")

    @classmethod
    def drop(cls) -> "Fault":
        """The connection closes with no answer at all."""
        return cls("drop")

    @classmethod
    def delay(cls, seconds: float) -> "Fault":
        """The request waits this long, then reaches the vendor's handler (a client timeout shorter than this
        gives up first)."""
        return cls("delay", delay_s=seconds)


class Faults:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()

    def add(self, path_prefix: str, *faults: Fault) -> None:
        with self._lock:
            self._queues.setdefault(path_prefix, deque()).extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for prefix in sorted(self._queues, key=len, reverse=True):
                if path.startswith(prefix) and self._queues[prefix]:
                    return self._queues[prefix].popleft()
        return None

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())


class LoopbackServer:
    def __init__(self, app: web.Application) -> None:
        self.faults = Faults()
        self.log: list[tuple[str, str]] = []
        self._app = app
        self._app.middlewares.insert(0, self._middleware)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        self.log.append((request.method, request.path))
        fault = self.faults.take(request.path)
        if fault is None:
            return await handler(request)
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)
            return await handler(request)
        if fault.kind == "drop":
            request.transport.close()
            raise asyncio.CancelledError()
        if fault.kind == "truncate":
            resp = web.StreamResponse(status=fault.status, headers=fault.headers)
            resp.content_length = len(fault.body) + 4096
            await resp.prepare(request)
            await resp.write(fault.body)
            request.transport.close()
            return resp
        return web.Response(status=fault.status, headers=fault.headers, body=fault.body)

    def start(self) -> "LoopbackServer":
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(self._app, handle_signals=False)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="loopback-vendor", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def requests_to(self, path_prefix: str) -> int:
        return sum(1 for _, path in self.log if path.startswith(path_prefix))
