"""What the desktop viewer reads: runs.outputs (where a run's contact sheet and log are) and assets.read (an asset's
bytes in one message), in process and through the REST routes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image

from iat.app import App
from iat.assets.store import abs_path
from iat.commands.assets import max_read_bytes
from iat.settings import Settings

from support import Client

WAIT_S = 240  # a loaded 2-core machine; the runner is waited for, never slept on
SHOT = {"job_key": "desk", "scene": "a desk by a window", "characters": ["mira"], "time_of_day": "day",
        "weather": "clear"}
OUTPUT_FIELDS = ("contact_sheet_asset_id", "contact_sheet_path", "contact_sheet_html_asset_id",
                 "contact_sheet_html_path", "run_log_asset_id", "run_log_path", "results_dir")


@pytest.fixture
def studio(client: Client, project: dict) -> Client:
    client.call("characters.create", slug="alpha", code="mira", name="Mira", identity_constraints_json={
        "appearance": "long light-blue hair", "outfit": "red dress", "palette": ["#c0392b", "#85c1e9"]})
    return client


def _finished_run(app: App, client: Client, seed: int) -> tuple[dict, dict]:
    """Runs one small shot; returns the run and its run.finished event."""
    events: list[tuple[str, dict]] = []
    unsubscribe = app.events.subscribe(lambda name, payload: events.append((name, payload)))
    try:
        run = client.call("runs.start", slug="alpha", shots=[SHOT], candidates=2, stages=["style_lock"], seed=seed)
        assert app.runner.wait_idle(WAIT_S), "the run did not finish"
        assert app.events.drain()
    finally:
        unsubscribe()
    finished = next(p for n, p in events if n == "run.finished" and p["run_id"] == run["id"])
    return client.call("runs.get", slug="alpha", run_id=run["id"]), finished


def _content(client: Client, asset_id: str, slug: str = "alpha") -> tuple[dict, bytes]:
    got = client.call("assets.read", slug=slug, asset_id=asset_id)
    return got, base64.b64decode(got["data_base64"], validate=True)


def test_a_finished_runs_contact_sheet_is_found_and_read(app: App, studio: Client):
    planned = studio.call("runs.plan", slug="alpha", shots=[SHOT], candidates=1)["run"]
    nothing = studio.call("runs.outputs", slug="alpha", run_id=planned["id"])
    assert nothing["status"] == "planned" and all(nothing[f] is None for f in OUTPUT_FIELDS)
    assert nothing["contact_sheet_pages"] == []

    first, finished = _finished_run(app, studio, seed=3)
    second, _ = _finished_run(app, studio, seed=4)
    assert first["status"] == second["status"] == "done"
    out = studio.call("runs.outputs", slug="alpha", run_id=first["id"])
    # The same ids and paths the run.finished event named, for a viewer that was not listening then.
    assert out["run_id"] == first["id"] and out["status"] == "done"
    assert {f: out[f] for f in OUTPUT_FIELDS} == {f: finished[f] for f in OUTPUT_FIELDS}
    # Every page of the sheet, in order: as the event lists them (a runner without pages: the one sheet).
    pages = finished.get("contact_sheet_pages") or [{
        "png_asset_id": finished["contact_sheet_asset_id"], "png_path": finished["contact_sheet_path"],
        "html_asset_id": finished["contact_sheet_html_asset_id"], "html_path": finished["contact_sheet_html_path"]}]
    assert [p.pop("page") for p in out["contact_sheet_pages"]] == list(range(1, len(pages) + 1))
    assert out["contact_sheet_pages"] == pages
    other = studio.call("runs.outputs", slug="alpha", run_id=second["id"])
    assert other["contact_sheet_asset_id"] not in (None, out["contact_sheet_asset_id"])

    sheet, png = _content(studio, out["contact_sheet_asset_id"])
    row = studio.call("assets.get", slug="alpha", asset_id=out["contact_sheet_asset_id"])
    assert sheet["id"] == row["id"] and sheet["mime_type"] == "image/png" and sheet["size"] == len(png)
    assert hashlib.sha256(png).hexdigest() == row["sha256"]
    assert png == Path(out["contact_sheet_path"]).read_bytes()
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.width, image.height) == ("PNG", row["width"], row["height"])

    page, html = _content(studio, out["contact_sheet_html_asset_id"])
    assert page["mime_type"] == "text/html" and b"<html" in html[:400].lower()
    assert html == Path(out["contact_sheet_html_path"]).read_bytes()
    _, log = _content(studio, out["run_log_asset_id"])
    assert [json.loads(line)["event"] for line in log.decode().splitlines()][-1] == "finished"


def test_a_long_runs_sheet_pages_are_listed_in_order_and_each_reads(app: App, studio: Client):
    shots = [{**SHOT, "job_key": f"shot-{i:02d}"} for i in range(9)]
    run = studio.call("runs.start", slug="alpha", shots=shots, candidates=1, stages=["style_lock"], seed=1)
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    out = studio.call("runs.outputs", slug="alpha", run_id=run["id"])
    pages = out["contact_sheet_pages"]
    assert [p["page"] for p in pages] == list(range(1, len(pages) + 1)) and pages[0]["png_asset_id"] == \
        out["contact_sheet_asset_id"]
    seen = set()
    for page in pages:
        got, png = _content(studio, page["png_asset_id"])
        assert got["mime_type"] == "image/png" and png == Path(page["png_path"]).read_bytes()
        assert Image.open(io.BytesIO(png)).format == "PNG"
        _, html = _content(studio, page["html_asset_id"])
        assert html == Path(page["html_path"]).read_bytes()
        seen.update(key for key in (s["job_key"] for s in shots) if key.encode() in html)
    assert seen == {s["job_key"] for s in shots}, "every job is on some page"


def test_unknown_runs_and_assets_are_not_found(studio: Client, tmp_path: Path):
    studio.call("projects.create", slug="beta", name="Beta")
    planned = studio.call("runs.plan", slug="alpha", shots=[SHOT], candidates=1)["run"]
    for method, params in (("runs.outputs", {"run_id": str(uuid.uuid4())}),
                           ("assets.read", {"asset_id": str(uuid.uuid4())})):
        err = studio.error(method, slug="alpha", **params)
        assert err.name == "not_found"
    # Another project's run is not this project's.
    assert studio.error("runs.outputs", slug="beta", run_id=planned["id"]).name == "not_found"
    assert studio.error("runs.outputs", slug="nobody", run_id=planned["id"]).name == "not_found"
    assert studio.error("assets.read", slug="alpha", asset_id="not-a-uuid").name == "invalid_params"


def _app_with_limit(home: Path, max_message_bytes: int) -> App:
    return App(Settings.from_env({}, home=home, max_message_bytes=max_message_bytes))


def test_reading_is_bounded_by_the_message_limit_and_names_the_size(tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    noise = Image.frombytes("RGB", (40, 40), bytes((i * 97 + i // 7) % 251 for i in range(40 * 40 * 3)))
    noise.save(src / "noise.png")
    size = (src / "noise.png").stat().st_size
    fits = 64 * 1024 + -(-size // 3) * 4  # the smallest limit whose base64 room holds the file
    assert max_read_bytes(fits) >= size > max_read_bytes(fits - 4)

    home = tmp_path / "home"
    app = _app_with_limit(home, fits)
    try:
        client = Client(app)
        root = client.call("projects.create", slug="alpha", name="Alpha")["root_dir"]
        client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(src)]})
        asset = client.call("assets.import", slug="alpha", paths=[str(src / "noise.png")])["items"][0]
        got, data = _content(client, asset["id"])
        assert data == (src / "noise.png").read_bytes() and got["size"] == size
        # The whole JSON-RPC response fits one message of the limit.
        assert len(json.dumps({"jsonrpc": "2.0", "id": 2**53, "result": got}).encode()) <= fits
        file = abs_path(Path(root), asset["storage_uri"])
    finally:
        app.close()

    app = _app_with_limit(home, fits - 4)
    try:
        client = Client(app)
        err = client.error("assets.read", slug="alpha", asset_id=asset["id"])
        assert err.name == "payload_too_large" and str(size) in err.message
        assert err.details["size"] == size and err.details["limit_bytes"] == max_read_bytes(fits - 4)
        # A row whose file is gone is not_found, naming where it should be.
        file.unlink()
        err = client.error("assets.read", slug="alpha", asset_id=asset["id"])
        assert err.name == "not_found" and err.details["storage_uri"] == asset["storage_uri"]
    finally:
        app.close()


def test_the_rest_routes_answer_the_same(app: App, studio: Client):
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    from iat.rpc.http import HttpTransport

    run, _ = _finished_run(app, studio, seed=9)
    executor = ThreadPoolExecutor(2)
    transport = HttpTransport(studio.dispatcher, executor, 0, app.settings.max_message_bytes, ())
    transport.start()
    try:
        def get(path: str) -> tuple[int, dict]:
            conn = http.client.HTTPConnection("127.0.0.1", transport.port, timeout=60)
            conn.request("GET", path, headers={"Authorization": f"Bearer {app.token}"})
            resp = conn.getresponse()
            out = resp.status, json.loads(resp.read())
            conn.close()
            return out

        status, out = get(f"/api/projects/alpha/runs/{run['id']}/outputs")
        assert status == 200 and out == studio.call("runs.outputs", slug="alpha", run_id=run["id"])
        status, got = get(f"/api/projects/alpha/assets/{out['contact_sheet_asset_id']}/content")
        assert status == 200 and got == studio.call("assets.read", slug="alpha", asset_id=got["id"])
        status, err = get(f"/api/projects/alpha/assets/{uuid.uuid4()}/content")
        assert status == 404 and err["error"]["data"]["name"] == "not_found"
        status, err = get(f"/api/projects/alpha/runs/{uuid.uuid4()}/outputs")
        assert status == 404 and err["error"]["data"]["name"] == "not_found"
    finally:
        transport.stop()
        executor.shutdown()
