"""Instructions survive a restart: a REAL sidecar killed with SIGKILL while instructions run, started again on the
same home and HTTP port. The running pipeline_run follows its run again (the runner resumes the run) and ends done;
a step that cannot resume (a background removal waiting on a paid API) ends failed, saying it was interrupted by
a restart; the queued instruction runs; the external agent's instruction stays running, and its callback to the
same URL with its token ends it. None vanish."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from support import wait_for as _wait_for
from tests.protocol.conftest import SidecarProcess
from vendors.agent_api import AgentServer, post
from vendors.loopback import LoopbackServer

pytestmark = pytest.mark.process

WAIT_S = 300  # a loaded 2-core machine; polled, never slept on
SHOTS = [{"job_key": f"shot-{i}", "scene": f"scene {i} on the quay"} for i in range(6)]
ENV = {"IAT_SECRETS_PASSPHRASE": "restart test passphrase"}
wait_for = functools.partial(_wait_for, timeout=WAIT_S, poll=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(home: Path, port: int) -> SidecarProcess:
    """stdio and HTTP on a fixed port (the callback URLs an external agent holds stay valid across the restart):
    `serve --stdio --http 0` with the 0 replaced through a bash wrapper (exec: the sidecar keeps bash's pid)."""
    return SidecarProcess(("stdio", "http"), home, ENV, argv_prefix=["bash", "-c", f'exec "${{@/#0/{port}}}"',
                                                                     "bash"])


class HangingRemover:
    """A paid background-removal API that never answers until released: a step in flight at the kill."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.requests = 0
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1.0/removebg", self._hang)
        self.server = LoopbackServer(app)

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        while not self.released.is_set():
            await asyncio.sleep(0.05)
        return web.json_response({"errors": [{"title": "gone"}]}, status=503)


def instruction(client, slug: str, instruction_id: str) -> dict:
    return client.call("agent.instructions.get", {"slug": slug, "instruction_id": instruction_id})


def events(client, slug: str, instruction_id: str) -> list[tuple[str, dict]]:
    items = client.call("agent.instructions.events", {"slug": slug, "instruction_id": instruction_id,
                                                      "limit": 1000})["items"]
    return [(e["event_type"], e["event_payload_json"]) for e in items]


def create(client, slug: str, instruction_type: str, inputs: dict, execution: dict | None = None) -> dict:
    return client.call("agent.instructions.create", {"slug": slug, "instruction_type": instruction_type,
                                                     "objective": f"{instruction_type} before the kill",
                                                     "inputs": inputs, "execution": execution or {}})


def test_instructions_survive_a_sigkill(tmp_path):
    home, port = tmp_path / "home", free_port()
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (96, 64), (40, 90, 160)).save(pictures / "subject.png")
    remover = HangingRemover()
    first = second = None
    with AgentServer(mode="hold") as agent, remover.server:
        try:
            first = launch(home, port)
            client = first.connect("stdio")
            for slug in ("alpha", "beta", "gamma"):
                client.call("projects.create", {"slug": slug, "name": slug.title()})
            # gamma: the external agent (it accepts and reports nothing until the test does).
            client.call("projects.update", {"slug": "gamma", "settings_json": {"copilot": {"agent": "external"}}})
            client.call("providers.configure", {"slug": "gamma", "provider_code": "agent_api",
                                                "config": {"endpoint": agent.url}})
            external = create(client, "gamma", "custom", {"action": "export_project"})
            wait_for(lambda: any(p.get("agent_status") == "accepted" for _, p in events(client, "gamma",
                                                                                         external["id"])),
                     "the external agent's answer")
            # beta: a background removal through a paid API that hangs.
            client.call("projects.update", {"slug": "beta", "settings_json": {"import_roots": [str(pictures)]}})
            client.call("providers.configure", {"slug": "beta", "provider_code": "removebg", "config": {
                "endpoint": remover.server.url + "/v1.0", "timeout_s": 600, "max_attempts": 1}})
            client.call("secrets.set", {"slug": "beta", "provider_code": "removebg", "secret_name": "api_key",
                                        "value": "rb-key"})
            asset = client.call("assets.import", {"slug": "beta", "paths": [str(pictures / "subject.png")]})
            stuck = create(client, "beta", "asset_edit", {"asset_id": asset["items"][0]["id"],
                                                          "operation": "remove_background"},
                           {"engines": ["removebg"]})
            # alpha: a run followed by its instruction, and another instruction queued behind it.
            run_it = create(client, "alpha", "pipeline_run", {"shots": SHOTS},
                            {"candidates": 3, "stages": ["style_lock", "light_time"], "seed": 11})
            queued = create(client, "alpha", "custom", {"action": "export_project", "format": "zip"})
            wait_for(lambda: remover.requests == 1, "the paid API call")
            run_id = wait_for(lambda: next((p["result"]["id"] for t, p in events(client, "alpha", run_it["id"])
                                            if t == "log" and p.get("ok") and p.get("result", {}).get("id")), None),
                              "the instruction's run")
            wait_for(lambda: sum(1 for m in client.notifications if m["method"] == "candidate.finished"
                                 and m["params"]["run_id"] == run_id) >= 2, "the run's first candidates")
            before = {i["id"]: i["status"] for i in (instruction(client, s, x["id"]) for s, x in (
                ("alpha", run_it), ("alpha", queued), ("beta", stuck), ("gamma", external)))}
            assert before == {run_it["id"]: "running", queued["id"]: "queued", stuck["id"]: "running",
                              external["id"]: "running"}
            assert client.call("runs.get", {"slug": "alpha", "run_id": run_id})["status"] == "running"
            first.kill()  # SIGKILL: the run mid-way, the removal in flight, the agent waiting on its callbacks

            second = launch(home, port)
            again = second.connect("stdio")
            done = wait_for(lambda: (r := instruction(again, "alpha", run_it["id"]))["status"] in (
                "done", "failed") and r, "the pipeline_run to end")
            trail = events(again, "alpha", run_it["id"])
            assert done["status"] == "done", trail
            result = dict(trail)["result"]
            assert result["run_id"] == run_id and result["status"] == "done" and result["jobs"] == {"done": 6}
            assert any(p.get("step") == "follow the run again after a restart" for t, p in trail)
            assert [(p["from"], p["to"]) for t, p in trail if t == "status_change"][-2:] == [
                ("queued", "running"), ("running", "done")]  # one start, one end: followed, never started again
            assert [r["id"] for r in again.call("runs.list", {"slug": "alpha"})["items"]] == [run_id]

            failed = wait_for(lambda: (r := instruction(again, "beta", stuck["id"]))["status"] != "running" and r,
                              "the interrupted step to end")
            trail = events(again, "beta", stuck["id"])
            assert failed["status"] == "failed", trail
            last = [p for t, p in trail if t == "status_change"][-1]
            assert (last["from"], last["to"], last["reason"]) == ("running", "failed", "interrupted by a restart")
            assert dict(trail)["error"]["details"]["reason"] == "interrupted_by_restart"
            assert remover.requests == 1  # not tried again

            ran = wait_for(lambda: (r := instruction(again, "alpha", queued["id"]))["status"] in ("done", "failed")
                           and r, "the queued instruction")
            assert ran["status"] == "done", events(again, "alpha", queued["id"])
            assert [e["format"] for e in again.call("exports.list", {"slug": "alpha"})["items"]] == ["zip"]

            # The external one waits for its agent, which reports to the URL it was given, with its token.
            trail = wait_for(lambda: (t := events(again, "gamma", external["id"])) and any(
                p.get("step") == "recovered" for _, p in t) and t, "the external instruction's recovery")
            assert instruction(again, "gamma", external["id"])["status"] == "running"
            assert [p["message"] for _, p in trail if p.get("step") == "recovered"] == [
                "sidecar restarted; waiting for the agent's callbacks"]
            callback = agent.received[0]["callback"]
            assert callback["status_url"].startswith(f"http://127.0.0.1:{port}/")
            status, answer = post(callback["status_url"], {"status": "done", "message": "exported elsewhere",
                                                           "result": {"where": "the farm"}}, callback["token"])
            assert (status, answer["status"]) == (200, "done"), answer
            assert dict(events(again, "gamma", external["id"]))["result"] == {"where": "the farm",
                                                                             "message": "exported elsewhere"}
            # None vanished.
            listed = {s: {i["id"]: i["status"] for i in again.call("agent.instructions.list", {"slug": s})["items"]}
                      for s in ("alpha", "beta", "gamma")}
            assert listed == {"alpha": {run_it["id"]: "done", queued["id"]: "done"},
                              "beta": {stuck["id"]: "failed"}, "gamma": {external["id"]: "done"}}
        finally:
            remover.released.set()
            for process in (first, second):
                if process is not None:
                    process.cleanup()
