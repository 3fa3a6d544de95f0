"""Clients of the real sidecar process that many threads may use at once (the protocol suite's clients keep one
call in flight): a multiplexer over a newline-delimited stream (stdio, a TCP socket) that routes each reply to
its caller by id, and an HTTP client for POST /rpc and the REST routes.

Every reply is shape-checked here and turned into an `Outcome`; anything that cannot be matched to its call (a
reply with an unknown or repeated id, a line that is not JSON) is kept in `strays` for the test to assert on.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from iat.errors import IATError

SIDECAR_BIN = Path(sys.executable).with_name("iat-sidecar")
REPLY_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """One answered call: `result` when it succeeded, else `error` (the checked error object)."""

    method: str
    params: dict
    via: str
    result: Any = None
    error: dict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_name(self) -> str | None:
        return None if self.error is None else self.error["data"]["name"]


def check_error_object(error: Any) -> dict:
    assert isinstance(error, dict) and set(error) == {"code", "message", "data"}, error
    assert isinstance(error["code"], int) and isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["data"], dict) and set(error["data"]) == {"name", "details"}, error
    assert isinstance(error["data"]["name"], str) and isinstance(error["data"]["details"], dict), error
    return error


def outcome_of(reply: Any, request_id: Any, method: str, params: dict, via: str) -> Outcome:
    """A JSON-RPC response to the request `request_id`: exactly jsonrpc, id and one of result or error."""
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert reply.get("id") == request_id and type(reply.get("id")) is type(request_id), (reply, request_id)
    if "error" in reply:
        assert set(reply) == {"jsonrpc", "error", "id"}, reply
        return Outcome(method, params, via, error=check_error_object(reply["error"]))
    assert set(reply) == {"jsonrpc", "result", "id"}, reply
    return Outcome(method, params, via, result=reply["result"])


_ids = itertools.count(1)
_ids_lock = threading.Lock()


def next_id(prefix: str) -> str:
    with _ids_lock:
        return f"{prefix}-{next(_ids)}"


class LineMux:
    """Many concurrent calls over one newline-delimited JSON stream; a thread reads it and routes replies by id.

    Notifications (events) are counted by method; replies nobody waits for and non-JSON lines go to `strays`."""

    def __init__(self, stream: BinaryIO, write: Callable[[bytes], None], via: str):
        self.via = via
        self._write = write
        self._write_lock = threading.Lock()
        self._pending: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self.notifications: dict[str, int] = {}
        self.strays: list[Any] = []
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), name=f"mux-{via}", daemon=True)
        self._thread.start()

    def _read(self, stream: BinaryIO) -> None:
        try:
            for line in iter(stream.readline, b""):
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    self.strays.append(line)
                    continue
                if isinstance(message, dict) and "method" in message and "id" not in message:
                    with self._lock:
                        self.notifications[message["method"]] = self.notifications.get(message["method"], 0) + 1
                    continue
                request_id = message.get("id") if isinstance(message, dict) else None
                with self._lock:
                    future = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
                if future is None:
                    self.strays.append(message)
                else:
                    future.set_result(message)
        except (OSError, ValueError):
            pass
        finally:
            self.eof.set()
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
            for future in pending:
                future.set_exception(AssertionError(f"{self.via}: the stream ended before the reply"))

    def call(self, method: str, params: dict | None = None, *, timeout: float = REPLY_TIMEOUT_S) -> Outcome:
        return self.burst([(method, params or {})], timeout=timeout)[0]

    def burst(self, calls: list[tuple[str, dict]], *, timeout: float = REPLY_TIMEOUT_S) -> list[Outcome]:
        """Sends every call in one write (they arrive together) and returns their outcomes in call order."""
        ids = [next_id(self.via) for _ in calls]
        futures: list[Future] = [Future() for _ in calls]
        with self._lock:
            assert not self.eof.is_set(), f"{self.via}: the stream has ended"
            self._pending.update(zip(ids, futures))
        data = b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).encode() + b"\n"
                        for i, (m, p) in zip(ids, calls))
        with self._write_lock:
            self._write(data)
        deadline = time.monotonic() + timeout
        return [outcome_of(f.result(max(0.0, deadline - time.monotonic())), i, m, p, self.via)
                for f, i, (m, p) in zip(futures, ids, calls)]


class TcpPeer(LineMux):
    """One authenticated socket connection."""

    def __init__(self, host: str, port: int, token: str, via: str = "tcp"):
        self.sock = socket.create_connection((host, port), timeout=REPLY_TIMEOUT_S)
        self.sock.settimeout(None)
        self._rfile = self.sock.makefile("rb")
        super().__init__(self._rfile, self.sock.sendall, via)
        auth = self.call("system.auth", {"token": token})
        assert auth.ok and auth.result == {"authenticated": True}, auth

    def close(self) -> None:
        for fn in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self._rfile.close, self.sock.close):
            try:
                fn()
            except OSError:
                pass


class HttpPeer:
    """POST /rpc (checked like any JSON-RPC reply) and REST calls (status checked against the error's name)."""

    def __init__(self, host: str, port: int, token: str, via: str = "http"):
        self.host, self.port, self.token, self.via = host, port, token, via

    def _http(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=REPLY_TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, method: str, params: dict | None = None) -> Outcome:
        params = params or {}
        request_id = next_id(self.via)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        status, data = self._http("POST", "/rpc", body)
        assert status == 200, (status, data[:500])
        return outcome_of(json.loads(data), request_id, method, params, self.via)

    def rest(self, method: str, params: dict, http_method: str, path: str, query: str = "",
             body: dict | None = None) -> Outcome:
        """One REST call; `method` and `params` only label the outcome (the route and body say what it does)."""
        status, data = self._http(http_method, path + (f"?{query}" if query else ""),
                                  None if body is None else json.dumps(body).encode())
        payload = json.loads(data)
        if status == 200:
            return Outcome(method, params, f"{self.via}-rest", result=payload)
        assert isinstance(payload, dict) and set(payload) == {"error"}, (status, payload)
        error = check_error_object(payload["error"])
        by_name = {cls.name: cls.http_status for cls in _subclasses(IATError)}  # the status each name maps to
        assert by_name.get(error["data"]["name"]) == status, (status, error)
        return Outcome(method, params, f"{self.via}-rest", error=error)


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


class Sidecar:
    """The real `iat-sidecar serve` process with the given transport flags; `ready` is its first stdout line,
    read before anything else, and `stdio` multiplexes calls over its pipe from then on."""

    def __init__(self, home: Path, args: list[str], argv: list[str] | None = None):
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.stderr_path = home.parent / f"{home.name}.stderr.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
        env.update({"IAT_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen((argv or [str(SIDECAR_BIN)]) + ["serve", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        try:
            self.ready_line = self._first_line()
        except BaseException:
            self.kill()
            raise
        self.ready = json.loads(self.ready_line)
        stdin = self.proc.stdin

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        self.stdio = LineMux(self.proc.stdout, write, "stdio")

    def _first_line(self) -> bytes:
        holder: list[bytes] = []
        reader = threading.Thread(target=lambda: holder.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        assert holder and holder[0], f"no first stdout line within {START_TIMEOUT_S} s:\n{self.stderr_text()[-3000:]}"
        return holder[0]

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_text(self) -> str:
        path = self.home / "logs" / "sidecar.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop_by_eof(self, budget_s: float = 2.0) -> tuple[int, float]:
        """Closes stdin and waits for the exit: (exit code, seconds it took). Fails past `budget_s`."""
        start = time.monotonic()
        self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {budget_s} s after end of stdin:\n{self.stderr_text()[-2000:]}") \
                from None
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self._stderr):
            try:
                stream.close()
            except OSError:
                pass
