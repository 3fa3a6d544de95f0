"""Calls that arrive together on a freshly started sidecar (first imports, first database opens) all get their
right answer: the ready line first, then one reply per request id with the result that request asked for, and a
clean exit on end of stdin."""

from __future__ import annotations

import json
import sys

import pytest

import iat
from iat.db.migrations import latest_version

from concurrent_clients import Sidecar

pytestmark = pytest.mark.process

UNKNOWN = "zz"


def test_pipelined_calls_on_a_cold_process(tmp_path):
    home = tmp_path / "home"
    sidecar = Sidecar(home, ["--stdio"], argv=[sys.executable, "-m", "iat"])
    try:
        ready = json.loads(sidecar.ready_line)
        assert set(ready) == {"jsonrpc", "method", "params"} and ready["jsonrpc"] == "2.0", ready
        assert ready["method"] == "sidecar.ready", ready
        params = ready["params"]
        assert params["version"] == iat.__version__
        assert params["pid"] == sidecar.proc.pid
        assert params["schema_version"] == {"app": latest_version("app"), "project": latest_version("project")}
        assert params["home"] == str(home)
        assert params["tcp"] is None and params["http"] is None
        assert isinstance(params["token"], str) and len(params["token"]) >= 32

        # First burst, on the cold process: a create, reads of a slug that does not exist, the user, all at once.
        reads = [("projects.list", {}), ("users.list", {}), ("audit.list", {}), ("storage.get", {"slug": UNKNOWN}),
                 ("projects.get", {"slug": UNKNOWN}), ("assets.list", {"slug": UNKNOWN}),
                 ("users.get", {"username": "local"}), ("system.ping", {})] * 3
        first = sidecar.stdio.burst([("projects.create", {"slug": "a", "name": "A"})] + reads)
        created = first[0]
        assert created.ok, created
        assert (created.result["slug"], created.result["name"], created.result["status"]) == ("a", "A", "active")
        assert created.result["root_dir"] == str(home / "projects" / "a")
        for out in first[1:]:
            check_cold_read(out, created.result)

        # Second burst, once the create was answered: every read now sees exactly that project.
        second = sidecar.stdio.burst([("projects.list", {}), ("projects.get", {"slug": "a"}),
                                      ("storage.get", {"slug": "a"}), ("assets.list", {"slug": "a"}),
                                      ("audit.list", {"slug": "a"}), ("audit.list", {}),
                                      ("storage.get", {"slug": UNKNOWN})] * 2)
        project = created.result
        for out in second:
            if out.params.get("slug") == UNKNOWN:
                assert out.error_name == "not_found", out
                continue
            assert out.ok, out
            if out.method == "projects.list":
                assert [(p["slug"], p["id"], p["status"]) for p in out.result["items"]] == \
                       [("a", project["id"], "active")]
            elif out.method == "projects.get":
                assert out.result == project
            elif out.method == "storage.get":
                assert out.result["project_id"] == project["id"]
                assert out.result["local_project_root"] == project["root_dir"]
            elif out.method == "assets.list":
                assert out.result == {"items": [], "next_cursor": None}
            elif out.params:  # the project's audit trail: its creation, once
                assert [(e["event_code"], e["project_id"]) for e in out.result["items"]] == \
                       [("project.created", project["id"])]
            else:  # the app's audit trail: nothing was deleted
                assert out.result == {"items": [], "next_cursor": None}

        assert not sidecar.stdio.strays, sidecar.stdio.strays
        code, _ = sidecar.stop_by_eof()
        assert code == 0, sidecar.stderr_text()[-2000:]
        assert not (home / "sidecar.json").exists()
    finally:
        sidecar.kill()


def check_cold_read(out, project: dict) -> None:
    """A read sent together with the create: its own right answer; the list may or may not see the project yet."""
    if out.params.get("slug") == UNKNOWN:
        assert out.error_name == "not_found", out
        assert out.error["data"]["details"] == {"slug": UNKNOWN}, out
        return
    assert out.ok, out
    if out.method == "projects.list":
        assert [p["slug"] for p in out.result["items"]] in ([], ["a"]), out
        assert all(p["id"] == project["id"] for p in out.result["items"]), out
    elif out.method == "users.list":
        assert [u["username"] for u in out.result["items"]] == ["local"], out
    elif out.method == "users.get":
        assert out.result["username"] == "local" and out.result["is_active"] is True, out
        assert out.result["id"] == project["owner_user_id"], out
    elif out.method == "audit.list":
        assert out.result == {"items": [], "next_cursor": None}, out
    elif out.method == "system.ping":
        assert out.result["pong"] is True and set(out.result) == {"pong", "time"}, out
    else:
        raise AssertionError(f"unexpected call {out}")
