"""A websocket client for the protocol suite (GET /ws of the real process), importable by its test modules."""

from __future__ import annotations

import asyncio
import json
import threading

import aiohttp

REPLY_TIMEOUT_S = 10.0


class WsPeer:
    """One websocket connection driven from the test thread: its own event loop runs on a thread, so a test can
    send, receive and use other clients in any order."""

    def __init__(self, process, headers: dict[str, str] | None = None, token: str | None = None):
        http = process.ready["http"]
        self.url = f"http://{http['host']}:{http['port']}/ws"
        self.headers = {"Authorization": f"Bearer {token or process.ready['token']}", **(headers or {})}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ws-peer", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None
        try:
            self.ws = self._run(self._connect())
        except BaseException:
            self.close()
            raise

    def _run(self, coro, timeout: float = REPLY_TIMEOUT_S):
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop).result(timeout + 1)

    async def _connect(self):
        self._session = aiohttp.ClientSession()
        return await self._session.ws_connect(self.url, headers=self.headers, autoclose=True, autoping=True)

    def send(self, message) -> None:
        data = message if isinstance(message, (bytes, str)) else json.dumps(message)
        self._run(self.ws.send_str(data if isinstance(data, str) else data.decode()))

    def receive(self, timeout: float = REPLY_TIMEOUT_S) -> aiohttp.WSMessage:
        return self._run(self.ws.receive(), timeout)

    def reply(self, request_id, timeout: float = REPLY_TIMEOUT_S):
        """The reply with this id (a batch reply when request_id is a list of ids); notifications are skipped."""
        while True:
            frame = self.receive(timeout)
            assert frame.type == aiohttp.WSMsgType.TEXT, f"expected a reply, got {frame.type}: {frame.data!r}"
            message = json.loads(frame.data)
            if isinstance(request_id, list) and isinstance(message, list):
                return message
            if isinstance(message, dict) and "id" in message and message["id"] == request_id:
                return message
            assert isinstance(message, dict) and "method" in message, f"a reply to something else: {message}"

    def reply_any(self, timeout: float = REPLY_TIMEOUT_S):
        """The next reply (object with an id, or a batch array); notifications are skipped."""
        while True:
            frame = self.receive(timeout)
            assert frame.type == aiohttp.WSMsgType.TEXT, f"expected a reply, got {frame.type}: {frame.data!r}"
            message = json.loads(frame.data)
            if isinstance(message, list) or "id" in message:
                return message

    def close(self) -> None:
        async def shut() -> None:
            if getattr(self, "ws", None) is not None:
                await self.ws.close()
            if self._session is not None:
                await self._session.close()

        try:
            self._run(shut(), 5)
        except Exception:  # noqa: BLE001 - the server may be gone already
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
