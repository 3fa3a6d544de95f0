"""A loopback external agent API: the other side of the agent instruction contract (SPEC 9.2), as an agent that
carries out instructions elsewhere would implement it.

- `POST /` (the endpoint): the instruction envelope, exactly its ten fields (anything else is 422
  `{"error": ...}`), with `callback.status_url`, `callback.events_url` and `callback.token`. With an API key set,
  `Authorization: Bearer <key>` is required (401 otherwise). The answer is the minimum response contract
  (`instruction_id`, `status`, `message`, `result?`, `error?`), chosen by the server's `mode` (or `modes[objective]`):
    accept   202 accepted, then, once the answer is written, reports from a thread: a log event, running, a second
             log event, then done with `{"echo": objective, "inputs": inputs}`, each through the callback URLs
             with `Authorization: Bearer <token>`
    hold     202 accepted and nothing more (the test reports through the callbacks itself)
    done     200 done at once, with the same result
    reject   200 rejected, with a message
    fail     200 failed, with an error object
    broken   200 with JSON that is not the contract (no status)
    wrong_id 200 accepted, about another instruction
    not_json 200 with a body that is not JSON
- `GET /`: `{"agent": "loopback", "version": 1}` (what the probe of providers.check reads).

`received` holds every envelope (with the Authorization header it came with); `reports` every callback sent,
as (url, body, HTTP status, answer).
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from urllib.parse import urlsplit

from aiohttp import web

from vendors.loopback import LoopbackServer

ENVELOPE_FIELDS = {"instruction_id", "project_slug", "instruction_type", "objective", "constraints", "inputs",
                   "execution", "confirmation_required", "requested_by", "callback"}


def post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    """One callback as an agent sends it (a fresh connection, JSON, the instruction's bearer token)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", parts.path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


class AgentServer:
    def __init__(self, *, mode: str = "accept", api_key: str | None = None) -> None:
        self.mode = mode
        self.modes: dict[str, str] = {}  # objective -> mode, for tests mixing several
        self.api_key = api_key
        self.received: list[dict] = []
        self.reports: list[tuple[str, dict, int, dict]] = []
        self.finished = threading.Event()  # set when an `accept` report thread has sent its last callback
        self._threads: list[threading.Thread] = []
        app = web.Application()
        app.router.add_post("/", self._dispatch)
        app.router.add_get("/", self._about)
        self.server = LoopbackServer(app)

    @property
    def url(self) -> str:
        return self.server.url + "/"

    def __enter__(self) -> AgentServer:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        for thread in self._threads:
            thread.join(30)
        self.server.stop()

    async def _about(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid API key"}}, status=401)
        return web.json_response({"agent": "loopback", "version": 1})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid API key"}}, status=401)
        try:
            envelope = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "the body is not JSON"}}, status=400)
        if not isinstance(envelope, dict) or set(envelope) != ENVELOPE_FIELDS or not isinstance(
                envelope.get("callback"), dict) or not envelope["callback"].get("token"):
            return web.json_response({"error": {"message": "not an instruction envelope (SPEC 9.2)"}}, status=422)
        self.received.append({**envelope, "authorization": request.headers.get("Authorization")})
        iid = envelope["instruction_id"]
        mode = self.modes.get(envelope["objective"], self.mode)
        result = {"echo": envelope["objective"], "inputs": envelope["inputs"]}
        if mode in ("accept", "hold"):
            resp = web.json_response({"instruction_id": iid, "status": "accepted", "message": "on it"}, status=202)
            if mode == "accept":
                await resp.prepare(request)
                await resp.write_eof()  # the answer first, then the reports
                thread = threading.Thread(target=self._report, args=(envelope, result), daemon=True)
                self._threads.append(thread)
                thread.start()
            return resp
        if mode == "done":
            return web.json_response({"instruction_id": iid, "status": "done", "message": "done already",
                                      "result": result})
        if mode == "reject":
            return web.json_response({"instruction_id": iid, "status": "rejected",
                                      "message": "this agent does not delete projects"})
        if mode == "fail":
            return web.json_response({"instruction_id": iid, "status": "failed", "message": "the render farm is down",
                                      "error": {"code": "farm_down", "retry_after_s": 600}})
        if mode == "broken":
            return web.json_response({"instruction_id": iid, "state": "accepted", "message": "typo in a key"})
        if mode == "wrong_id":
            return web.json_response({"instruction_id": str(uuid.uuid4()), "status": "accepted", "message": "hm"})
        return web.Response(text="<html>accepted</html>", content_type="application/json")  # not_json

    def _report(self, envelope: dict, result: dict) -> None:
        cb = envelope["callback"]
        token = cb["token"]
        for url, body in ((cb["events_url"], {"event": {"type": "log", "payload": {"step": "planning"}}}),
                          (cb["status_url"], {"status": "running", "message": "working on it"}),
                          (cb["events_url"], {"event": {"type": "log", "payload": {"step": "rendering"}}}),
                          (cb["status_url"], {"status": "done", "message": "all done", "result": result})):
            status, answer = post(url, body, token)
            self.reports.append((url, body, status, answer))
        self.finished.set()
