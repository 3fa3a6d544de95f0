"""storage.sync through the real sidecar's REST route, a sync killed mid-way that resumes, and a run mirrored when
it ends (settings_json.s3_sync_after_run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sync_support import remote_objects, sha256, write_files

SIDECAR_BIN = Path(sys.executable).with_name("iat-sidecar")


def _rest(base: str, token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.process
def test_the_rest_route_syncs_through_the_real_sidecar(tmp_path, s3, bucket, s3_endpoint):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
    env["IAT_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([str(SIDECAR_BIN), "serve", "--stdio", "--http", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        ready = json.loads(proc.stdout.readline())["params"]
        base, token = f"http://127.0.0.1:{ready['http']['port']}", ready["token"]
        assert _rest(base, token, "POST", "/api/projects", {"slug": "web", "name": "Web"})[0] in (200, 201)
        status, body = _rest(base, token, "POST", "/api/projects/web/storage/sync", {})
        assert (status, body["error"]["data"]["name"]) == (409, "conflict")  # S3 not enabled
        status, _ = _rest(base, token, "PUT", "/api/projects/web/storage", {
            "s3_enabled": True, "s3_bucket": bucket, "s3_prefix": "web", "s3_endpoint_url": s3_endpoint,
            "s3_region": "us-east-1"})
        assert status == 200
        files = write_files(tmp_path / "home" / "projects" / "web", 5)
        status, body = _rest(base, token, "POST", "/api/projects/web/storage/sync", {"dry_run": True})
        assert (status, body["uploaded"], body["status"]) == (200, 5, "planned")
        status, body = _rest(base, token, "POST", "/api/projects/web/storage/sync", {"direction": "push"})
        assert (status, body["uploaded"], body["status"]) == (200, 5, "done")
        assert {k: v["sha256"] for k, v in remote_objects(s3, bucket, "web").items()} == files
    finally:
        proc.stdin.close()
        proc.wait(10)


KILLED_SYNC = textwrap.dedent("""
    import sys
    from pathlib import Path
    from iat.app import App
    from iat.settings import Settings
    from iat.sync import s3
    app = App(Settings.from_env({}, home=Path(sys.argv[1])))
    with app.projects.lease("alpha") as handle:
        s3.sync(app, handle, s3.Options("push", max_concurrency=2), actor_id=None)
    print("finished", flush=True)
""")


@pytest.mark.process
def test_a_killed_sync_resumes_and_sends_only_what_is_missing(app, client, mirror, s3, home):
    files = write_files(mirror.root, 400)
    app.close()  # the child process owns the project while it syncs
    child = subprocess.Popen([sys.executable, "-c", KILLED_SYNC, str(home)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    present = 0
    while present < 60:
        assert child.poll() is None, "the sync ended before it could be killed: " + child.stderr.read().decode()[-500:]
        assert time.monotonic() < deadline
        present = s3.list_objects_v2(Bucket=mirror.bucket, Prefix=mirror.prefix + "/").get("KeyCount", 0)
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    present = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mirror.bucket)
               for o in page.get("Contents", ())}
    assert 60 <= len(present) < 400

    from iat.app import App
    from iat.settings import Settings
    from support import Client

    again = App(Settings.from_env({}, home=home))
    try:
        out = Client(again).call("storage.sync", slug="alpha")
        assert out["status"] == "done"
        assert out["uploaded"] == 400 - len(present)  # what was up is verified, not sent again
        assert out["skipped"] == len(present)
        remote = remote_objects(s3, mirror.bucket, mirror.prefix)
        assert {k: v["sha256"] for k, v in remote.items()} == files
        for rel, digest in list(files.items())[::50]:
            body = s3.get_object(Bucket=mirror.bucket, Key=f"{mirror.prefix}/{rel}")["Body"].read()
            assert sha256(body) == digest
        assert Client(again).call("storage.sync", slug="alpha")["uploaded"] == 0
    finally:
        again.close()


def test_a_run_is_mirrored_when_it_ends(app, client, mirror, s3):
    from support import finished_run

    client.call("projects.update", slug="alpha", settings_json={"s3_sync_after_run": True})
    client.call("characters.create", slug="alpha", code="mira", name="Mira")
    seen: list[dict] = []
    app.events.subscribe(lambda name, payload: seen.append(payload) if name == "storage.synced" else None)
    run, _, _, _ = finished_run(app, client, "preview", shots=[{"job_key": "s1", "scene": "a quay at dusk",
                                                                "characters": ["mira"]}], candidates=1)
    deadline = time.monotonic() + 60
    while not seen:
        assert time.monotonic() < deadline, "no storage.synced after the run"
        time.sleep(0.05)
    assert seen[0]["trigger"] == "after_run" and seen[0]["uploaded"] > 0 and seen[0]["failed"] == 0
    remote = remote_objects(s3, mirror.bucket, mirror.prefix)
    assert any(k.startswith(f"runs/{run['id']}/") for k in remote)
    assets = client.call("assets.list", slug="alpha", limit=500)["items"]
    assert assets and {a["storage_uri"] for a in assets} <= set(remote)
    for a in assets:
        assert remote[a["storage_uri"]]["sha256"] == a["sha256"]
