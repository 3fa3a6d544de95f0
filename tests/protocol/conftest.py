"""Harness for the protocol suite: the REAL `iat-sidecar` process, one small client per transport.

Every test module here gets one sidecar process per transport (`sidecar` fixture, module scope, parametrized over
stdio, tcp and http) and talks to it through a client with the same interface on each transport:

    client.request(obj)       one raw JSON-RPC message or batch (dict, list, str or bytes) -> parsed reply, or None
                              when nothing comes back (notifications only; over HTTP that is a 204)
    client.send_raw(bytes)    bytes exactly as given (stdio/tcp: onto the stream; http: as the POST /rpc body,
                              returning the HttpResponse)
    client.call(method, params) / client.error(method, params)   the result, or the checked error object
    client.notifications      what the sidecar pushed (stdio/tcp; http /rpc cannot push, see HttpClient.ws_exchange)

Tests that stop or kill the process start their own with the `launch` factory. Helpers for checking replies are
on the `proto` fixture (one error shape, ids echoed, state unchanged).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

SIDECAR_BIN = Path(sys.executable).with_name("iat-sidecar")
TRANSPORTS = ("stdio", "tcp", "http")
EXIT_BUDGET_S = 2.0  # the sidecar's promise: stops within 2 s
START_TIMEOUT_S = 30.0  # generous: a loaded CI machine; readiness is polled, never slept for
REPLY_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 65536  # every process here runs with this limit, so a 100 KB message is over it


def unique_slug(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def encode(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def rpc(method: str, params: Any = None, id: Any = "__auto__") -> dict:  # noqa: A002 - JSON-RPC's own name
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    msg["id"] = f"r-{uuid.uuid4().hex[:12]}" if id == "__auto__" else id
    return msg


def notify(method: str, params: Any = None) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def expects_reply(message: Any) -> bool:
    """Whether JSON-RPC 2.0 calls for an answer: anything but well-formed notifications (a malformed object or
    unparsable text is answered with an error whose id is null)."""
    if isinstance(message, (bytes, str)):
        try:
            message = json.loads(message)
        except (ValueError, RecursionError):
            return True
    if isinstance(message, list):
        return not message or any(_object_expects_reply(m) for m in message)
    return _object_expects_reply(message)


def _object_expects_reply(message: Any) -> bool:
    if not isinstance(message, dict) or "id" in message:
        return True
    well_formed = (message.get("jsonrpc") == "2.0" and isinstance(message.get("method"), str)
                   and set(message) <= {"jsonrpc", "method", "params"}
                   and isinstance(message.get("params", []), (dict, list)))
    return not well_formed


# --- reading newline-delimited JSON (the sidecar's stdout, a TCP connection) ---


class LineReader:
    """Reads lines on a thread and sorts them: responses (objects with an id, result or error; arrays) into a
    queue, notifications (objects with a method and no id) into a list; anything else is kept in `garbage`."""

    def __init__(self, stream, name: str):
        self._stream = stream
        self.replies: queue.Queue = queue.Queue()
        self.notifications: list[dict] = []
        self.garbage: list[bytes] = []
        self.eof = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in iter(self._stream.readline, b""):
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    self.garbage.append(line)
                    continue
                if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                    with self._cond:
                        self.notifications.append(msg)
                        self._cond.notify_all()
                elif isinstance(msg, (dict, list)):
                    self.replies.put(msg)
                else:
                    self.garbage.append(line)
        except (OSError, ValueError):
            pass
        finally:
            self.eof.set()
            with self._cond:
                self._cond.notify_all()

    def next_reply(self, timeout: float = REPLY_TIMEOUT_S, what: str = "a reply") -> Any:
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {what} within {timeout} s (stream ended: {self.eof.is_set()})") from None

    def pending_replies(self) -> list:
        out = []
        while True:
            try:
                out.append(self.replies.get_nowait())
            except queue.Empty:
                return out

    def wait_notification(self, method: str, predicate: Callable[[dict], bool] = lambda p: True,
                          timeout: float = REPLY_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.notifications:
                    if msg.get("method") == method and predicate(msg.get("params") or {}):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0 or self.eof.is_set():
                    raise AssertionError(f"no {method} notification within {timeout} s; got "
                                         f"{[m.get('method') for m in self.notifications]}")
                self._cond.wait(left)


# --- clients ---


class ClientBase:
    transport: str
    process: "SidecarProcess"

    def request(self, message: Any, *, timeout: float = REPLY_TIMEOUT_S) -> Any:
        raise NotImplementedError

    def call(self, method: str, params: Any = None) -> Any:
        msg = rpc(method, params)
        reply = self.request(msg)
        assert isinstance(reply, dict) and "error" not in reply, f"{method} failed: {reply}"
        assert reply == {"jsonrpc": "2.0", "result": reply["result"], "id": msg["id"]}, reply
        return reply["result"]

    def error(self, method: str, params: Any = None) -> dict:
        """Calls a method that must fail; returns its (shape-checked) error object."""
        msg = rpc(method, params)
        reply = self.request(msg)
        check_error_response(reply, request_id=msg["id"])
        return reply["error"]

    def close(self) -> None:
        pass


class LineClient(ClientBase):
    """stdio and tcp: newline-delimited JSON both ways, one message in flight at a time (replies may come in any
    order on the wire, so the suite never pipelines)."""

    def __init__(self, transport: str, reader: LineReader, write: Callable[[bytes], None]):
        self.transport = transport
        self.reader = reader
        self._write = write

    @property
    def notifications(self) -> list[dict]:
        return self.reader.notifications

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def request(self, message: Any, *, timeout: float = REPLY_TIMEOUT_S) -> Any:
        stale = self.reader.pending_replies()
        assert not stale, f"replies nobody asked for arrived earlier: {stale}"
        self.send_raw(encode(message) + b"\n")
        if expects_reply(message):
            return self.reader.next_reply(timeout)
        # Nothing should come back: a ping behind it proves it (its answer must be the only one).
        sentinel = f"sentinel-{uuid.uuid4().hex[:12]}"
        self.send_raw(encode(rpc("system.ping", id=sentinel)) + b"\n")
        reply = self.reader.next_reply(timeout, what="answer to the sentinel ping")
        if isinstance(reply, dict) and reply.get("id") == sentinel:
            return None
        self.reader.next_reply(timeout, what="answer to the sentinel ping")
        return reply  # a reply to a notification: the caller's `is None` check fails with it in view

    def wait_notification(self, method: str, predicate: Callable[[dict], bool] = lambda p: True,
                          timeout: float = REPLY_TIMEOUT_S) -> dict:
        return self.reader.wait_notification(method, predicate, timeout)


class StdioClient(LineClient):
    def __init__(self, process: "SidecarProcess"):
        self.process = process
        stdin = process.proc.stdin

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        super().__init__("stdio", process.stdout, write)


class TcpClient(LineClient):
    def __init__(self, process: "SidecarProcess", *, authenticate: bool = True, host: str = "127.0.0.1"):
        self.process = process
        tcp = process.ready["tcp"]
        self.sock = socket.create_connection((host, tcp["port"]), timeout=REPLY_TIMEOUT_S)
        self.sock.settimeout(None)
        self._rfile = self.sock.makefile("rb")
        super().__init__("tcp", LineReader(self._rfile, "tcp-reader"), self.sock.sendall)
        if authenticate:
            self.authenticate()

    def authenticate(self, token: str | None = None) -> Any:
        reply = self.request({"jsonrpc": "2.0", "id": "auth", "method": "system.auth",
                              "params": {"token": token or self.process.ready["token"]}})
        if token is None:
            assert reply == {"jsonrpc": "2.0", "result": {"authenticated": True}, "id": "auth"}, reply
        return reply

    def close(self) -> None:
        for fn in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self._rfile.close, self.sock.close):
            try:
                fn()
            except OSError:
                pass


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient(ClientBase):
    transport = "http"

    def __init__(self, process: "SidecarProcess"):
        self.process = process
        self.host = process.ready["http"]["host"]
        self.port = process.ready["http"]["port"]
        self.token = process.ready["token"]
        self.notifications: list[dict] = []  # POST /rpc cannot push; see ws_exchange

    def http(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             token: str | None | bool = True, timeout: float = REPLY_TIMEOUT_S) -> HttpResponse:
        """One HTTP request. token=True sends the right bearer token, a string sends that, None/False none."""
        all_headers = {}
        if token is True:
            all_headers["Authorization"] = f"Bearer {self.token}"
        elif token:
            all_headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = encode(body)
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=all_headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer (413) before it read a body over the limit
            resp = conn.getresponse()
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def send_raw(self, data: bytes) -> HttpResponse:
        return self.http("POST", "/rpc", data)

    def request(self, message: Any, *, timeout: float = REPLY_TIMEOUT_S) -> Any:
        resp = self.http("POST", "/rpc", encode(message), timeout=timeout)
        if resp.status == 204:
            assert resp.body == b"", resp.body
            return None
        assert resp.status == 200, f"POST /rpc answered {resp.status}: {resp.body[:500]!r}"
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        return resp.json

    def ws_exchange(self, messages: list[Any], *, until: Callable[[list[dict]], bool],
                    headers: dict[str, str] | None = None, timeout: float = REPLY_TIMEOUT_S) -> list[dict]:
        """Opens GET /ws with the bearer token, sends the messages, collects what comes back until `until`."""
        import aiohttp

        async def run() -> list[dict]:
            received: list[dict] = []
            hdrs = {"Authorization": f"Bearer {self.token}", **(headers or {})}
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://{self.host}:{self.port}/ws", headers=hdrs,
                                              timeout=aiohttp.ClientWSTimeout(ws_close=timeout)) as ws:
                    for msg in messages:
                        await ws.send_str(encode(msg).decode())
                    async with asyncio.timeout(timeout):
                        while not until(received):
                            frame = await ws.receive()
                            if frame.type != aiohttp.WSMsgType.TEXT:
                                raise AssertionError(f"websocket frame {frame.type}: {frame.data!r}")
                            received.append(json.loads(frame.data))
            return received

        return asyncio.run(run())


# --- the process ---


class SidecarProcess:
    """One real `iat-sidecar serve` process with a temporary IAT_HOME, stdout read on a thread, stderr in a file."""

    def __init__(self, transports: tuple[str, ...], home: Path, env: dict[str, str] | None = None,
                 argv_prefix: list[str] | None = None):
        self.transports = transports
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.stderr_path = home.parent / f"{home.name}.stderr.{uuid.uuid4().hex[:6]}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
        full_env.update({"IAT_HOME": str(home), "IAT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
                         "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        args = [str(SIDECAR_BIN), "serve"]
        if "stdio" in transports:
            args.append("--stdio")
        if "tcp" in transports:
            args += ["--tcp", "0"]
        if "http" in transports:
            args += ["--http", "0"]
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen((argv_prefix or []) + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=full_env)
        self.stdout = LineReader(self.proc.stdout, "sidecar-stdout")
        try:
            self.ready_message = self._read_ready()
        except BaseException:
            self.cleanup()
            raise
        self.ready: dict = self.ready_message["params"]
        self.pid: int = self.ready["pid"]  # the sidecar's own (not proc.pid when started through a wrapper)

    def _read_ready(self) -> dict:
        """The first stdout line must be the sidecar.ready notification."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.stdout.notifications or self.stdout.garbage or not self.stdout.replies.empty():
                break
            if self.stdout.eof.wait(0.02):
                break
        assert not self.stdout.garbage and self.stdout.replies.empty(), (
            f"first stdout line is not sidecar.ready: {self.stdout.garbage or self.stdout.pending_replies()}")
        assert self.stdout.notifications, (f"no sidecar.ready within {START_TIMEOUT_S} s (exit code "
                                           f"{self.proc.poll()}); stderr:\n{self.stderr_text()[-3000:]}")
        first = self.stdout.notifications.pop(0)
        assert first.get("method") == "sidecar.ready", first
        return first

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_text(self) -> str:
        path = self.home / "logs" / "sidecar.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    @property
    def ready_file(self) -> Path:
        return self.home / "sidecar.json"

    def connect(self, transport: str | None = None) -> ClientBase:
        """A client on one of this process's transports, once that transport answers (polled)."""
        transport = transport or self.transports[0]
        if transport == "stdio":
            client: ClientBase = StdioClient(self)
            client.call("system.ping")
        elif transport == "tcp":
            client = TcpClient(self)  # the port is bound before sidecar.ready is printed
            client.call("system.ping")
        else:
            client = HttpClient(self)
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    resp = client.http("GET", "/api/system/ping")
                    if resp.status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "HTTP transport never answered GET /api/system/ping"
                time.sleep(0.02)
        return client

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait_exit(self, budget: float = EXIT_BUDGET_S, since: float | None = None) -> int:
        """Waits for the process to exit within `budget` seconds counted from `since` (default: now)."""
        start = time.monotonic() if since is None else since
        try:
            code = self.proc.wait(timeout=max(0.0, budget - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sidecar still running {budget} s after it was asked to stop; stderr tail:\n"
                                 f"{self.stderr_text()[-2000:]}") from None
        return code

    def stop(self) -> int:
        """The clean stop a transport's owner uses: stdio closes stdin, the others SIGTERM. Must exit in 2 s."""
        start = time.monotonic()
        if "stdio" in self.transports:
            self.close_stdin()
        else:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(since=start)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def cleanup(self) -> None:
        self.kill()
        self.close_stdin()
        self._stderr.close()


def pid_gone(pid: int) -> bool:
    """True once `pid` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.02)
    return pid_gone(pid)


# --- checks ---


def check_error_object(error: Any, code: int | None = None, name: str | None = None) -> dict:
    """The one error shape: {"code": int, "message": str, "data": {"name": str, "details": object}}."""
    assert isinstance(error, dict), error
    assert set(error) == {"code", "message", "data"}, error
    assert isinstance(error["code"], int) and not isinstance(error["code"], bool), error
    assert isinstance(error["message"], str) and error["message"], error
    assert "Traceback" not in error["message"], error
    data = error["data"]
    assert isinstance(data, dict) and set(data) == {"name", "details"}, error
    assert isinstance(data["name"], str) and data["name"], error
    assert isinstance(data["details"], dict), error
    assert "Traceback" not in json.dumps(error), error
    if code is not None:
        assert error["code"] == code, error
    if name is not None:
        assert data["name"] == name, error
    return error


_NO_ID = object()


def check_error_response(reply: Any, code: int | None = None, name: str | None = None,
                         request_id: Any = _NO_ID) -> dict:
    """A JSON-RPC error response: exactly jsonrpc, error and id (no result), with the one error shape."""
    assert isinstance(reply, dict), reply
    assert set(reply) == {"jsonrpc", "error", "id"}, reply
    assert reply["jsonrpc"] == "2.0", reply
    if request_id is not _NO_ID:
        assert reply["id"] == request_id and type(reply["id"]) is type(request_id), (reply, request_id)
    check_error_object(reply["error"], code, name)
    return reply["error"]


def check_http_error(resp: HttpResponse, status: int, code: int | None = None, name: str | None = None) -> dict:
    assert resp.status == status, (resp.status, resp.body[:500])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json
    assert isinstance(body, dict) and set(body) == {"error"}, body
    return check_error_object(body["error"], code, name)


def check_result_response(reply: Any, request_id: Any) -> Any:
    assert isinstance(reply, dict) and set(reply) == {"jsonrpc", "result", "id"}, reply
    assert reply["jsonrpc"] == "2.0", reply
    assert reply["id"] == request_id and type(reply["id"]) is type(request_id), (reply, request_id)
    return reply["result"]


def snapshot(client: ClientBase) -> dict:
    """What a bad message must not change: the project list and the audit trails (app and each project)."""
    projects = client.call("projects.list")["items"]
    state = {"projects": projects, "audit": client.call("audit.list", {"limit": 500})["items"]}
    for p in projects:
        state[f"audit:{p['slug']}"] = client.call("audit.list", {"slug": p["slug"], "limit": 500})["items"]
    return state


@pytest.fixture(scope="session")
def proto() -> SimpleNamespace:
    """The suite's checks and builders, as one namespace (test modules cannot import a conftest)."""
    return SimpleNamespace(
        rpc=rpc, notify=notify, encode=encode, unique_slug=unique_slug, snapshot=snapshot,
        error_object=check_error_object, error_response=check_error_response, http_error=check_http_error,
        result=check_result_response, pid_gone=pid_gone, wait_pid_gone=wait_pid_gone,
        TcpClient=TcpClient, SidecarProcess=SidecarProcess, SIDECAR_BIN=SIDECAR_BIN,
        EXIT_BUDGET_S=EXIT_BUDGET_S, MAX_MESSAGE_BYTES=MAX_MESSAGE_BYTES, START_TIMEOUT_S=START_TIMEOUT_S,
    )



# --- fixtures ---


def _finish(process: SidecarProcess, clients: list[ClientBase]) -> None:
    """Teardown: clean stop within 2 s, ready file removed, stdout carried protocol lines only."""
    try:
        for client in clients:
            client.close()
        if process.alive():
            assert process.stop() == 0, process.stderr_text()[-2000:]
            assert not process.ready_file.exists(), "ready file left behind after a clean exit"
        assert not process.stdout.garbage, f"non-JSON on stdout: {process.stdout.garbage[:5]}"
    finally:
        process.cleanup()


@pytest.fixture
def launch(tmp_path: Path):
    """Starts real sidecar processes for one test: launch("stdio", "tcp", env={...}, home=...) -> process.
    Whatever is still running afterwards is killed."""
    started: list[SidecarProcess] = []

    def start(*transports: str, home: Path | None = None, env: dict[str, str] | None = None,
              argv_prefix: list[str] | None = None) -> SidecarProcess:
        process = SidecarProcess(transports, home or tmp_path / "home", env, argv_prefix)
        started.append(process)
        return process

    yield start
    for process in started:
        process.cleanup()


@pytest.fixture(scope="module", params=TRANSPORTS)
def sidecar(request, tmp_path_factory) -> ClientBase:
    """One real sidecar per transport per module, with a client on that transport."""
    transport = request.param
    process = SidecarProcess((transport,), tmp_path_factory.mktemp(f"{transport}-") / "home")
    client = None
    try:
        client = process.connect(transport)
        yield client
    finally:
        _finish(process, [client] if client else [])

