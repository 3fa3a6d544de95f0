"""Events across workstations: two REAL sidecar processes on one studio database; a change made through one reaches
the other's clients (stdio and TCP) as a notification tagged with its origin, never echoed back to its own
clients; events of projects that are not on the studio stay on their workstation; payloads over NOTIFY's limit go
trimmed to their ids."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from iat.studio import notify
from tests.protocol.conftest import SidecarProcess

pytestmark = [pytest.mark.postgres, pytest.mark.process]

WAIT_S = 30.0  # polled: a loaded 2-core machine


@pytest.fixture
def pair(tmp_path, pg_database):
    env = {"IAT_STUDIO_DATABASE_URL": pg_database}
    procs = [SidecarProcess(transports, tmp_path / name, env)
             for name, transports in (("ws-a", ("stdio",)), ("ws-b", ("stdio", "tcp")))]
    yield procs
    for proc in procs:
        proc.cleanup()


def _arrives(change, client, event: str, predicate) -> dict:
    """Makes `change` until `client` gets the `event` it causes: the first ones may come before the other
    sidecar's LISTEN is in force (NOTIFY is not a queue)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        marker = change()
        try:
            return client.wait_notification(event, lambda p: predicate(p, marker), timeout=1.0)["params"]
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_a_change_on_one_sidecar_reaches_the_clients_of_the_other(pair):
    a_proc, b_proc = pair
    a = a_proc.connect("stdio")
    b_stdio = b_proc.connect("stdio")
    made = a.call("projects.create", {"slug": "shared", "name": "Shared", "backend": "postgres"})
    a.call("projects.create", {"slug": "local", "name": "Local only"})  # SQLite: its events stay on A
    b_stdio.call("projects.attach", {"slug": "shared"})
    b_tcp = b_proc.connect("tcp")

    def change_on_a() -> str:
        text = f"from A {uuid.uuid4().hex[:8]}"
        a.call("projects.update", {"slug": "shared", "description": text})
        a.call("projects.update", {"slug": "local", "description": text})
        return text

    got = _arrives(change_on_a, b_tcp, "project.updated",
                   lambda p, _: p.get("slug") == "shared")
    assert got["project_id"] == made["id"]
    assert got["origin"]["pid"] == a_proc.pid and got["origin"]["sidecar_id"]
    # The stdio client of B gets it too, and B's database shows the change.
    b_stdio.wait_notification("project.updated", lambda p: p.get("origin", {}).get("pid") == a_proc.pid)
    assert b_stdio.call("projects.get", {"slug": "shared"})["description"].startswith("from A")
    # Events of A's SQLite project never left A; A's own events never came back to A.
    assert not [n for n in b_tcp.notifications + b_stdio.notifications if n["params"].get("slug") == "local"]
    assert not [n for n in a.notifications if (n.get("params") or {}).get("origin", {}).get("pid") == a_proc.pid]
    # B's attach reached A, from B.
    assert a.wait_notification("project.attached")["params"]["origin"]["pid"] == b_proc.pid

    # The other way: a change through B's TCP client reaches A's stdio client, tagged with B.
    def change_on_b() -> str:
        text = f"from B {uuid.uuid4().hex[:8]}"
        b_tcp.call("projects.update", {"slug": "shared", "name": text})
        return text

    back = _arrives(change_on_b, a, "project.updated",
                    lambda p, marker: "origin" in p and p.get("slug") == "shared")
    assert back["origin"]["pid"] == b_proc.pid
    assert back["origin"]["sidecar_id"] != got["origin"]["sidecar_id"]


def test_big_payloads_go_trimmed_to_their_ids():
    origin = {"sidecar_id": "x" * 32, "host": "h", "pid": 1}
    small = notify.encode(origin, "asset.created", {"project_id": "p1", "asset_id": "a1", "meta": {"k": "v"}})
    assert json.loads(small)["payload"] == {"project_id": "p1", "asset_id": "a1", "meta": {"k": "v"}}

    big = {"project_id": "p1", "run_id": "r1", "slug": "s", "status": "done", "prompt": "x" * 20_000,
           "items": list(range(5000))}
    text = notify.encode(origin, "run.finished", big)
    assert len(text.encode()) <= notify.MAX_PAYLOAD_BYTES
    assert json.loads(text) == {"origin": origin, "event": "run.finished", "payload": {
        "project_id": "p1", "run_id": "r1", "slug": "s", "status": "done", "trimmed": True}}
    assert notify.encode(origin, "x", {"project_id": "p" * 9000}) is None  # not even its ids fit: not sent
