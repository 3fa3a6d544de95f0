"""exports.create / exports.import: a project with runs and imported assets goes through each package format into a
fresh app home with the same rows and files; snapshots stay consistent while writes go on; secrets stay home; an
older package is migrated; slugs and ids that are taken are replaced; audit rows and REST routes."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from iat.app import App
from iat.db.migrations import latest_version
from iat.settings import Settings
from iat.transfer import manifest as mf

from support import Client, all_assets

WAIT_S = 240
PASSPHRASE = {"IAT_SECRETS_PASSPHRASE": "correct horse battery staple"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def made(app: App, client: Client, project: dict, src: Path) -> Client:
    """alpha with a character, two imported pictures and a finished preview run (cut-outs, results, run log)."""
    client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(src)]})
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (64, 48), colour).save(src / f"ref{i}.png")
    client.call("assets.import", slug="alpha", paths=[str(src)], kind="reference")
    client.call("characters.create", slug="alpha", code="mira", name="Mira",
                identity_constraints_json={"appearance": "long light-blue hair"})
    client.call("runs.start", slug="alpha", provider="preview", candidates=2, shots=[
        {"job_key": "street", "scene": "a rainy street", "characters": ["mira"], "time_of_day": "dusk",
         "weather": "rain", "cutout": True}])
    assert app.runner.wait_idle(WAIT_S)
    return client


def _fresh(tmp_path: Path, name: str, env: dict | None = None) -> App:
    return App(Settings.from_env(env or {}, home=tmp_path / name))


def _package_db_counts(export: dict, tmp_path: Path) -> dict[str, int]:
    """Row counts read from the package's own project.db (independently of the code that wrote the manifest)."""
    out = tmp_path / f"unpacked-{export['id']}"
    path = Path(export["path"])
    if export["format"] == "folder":
        db = path / "project.db"
    else:
        out.mkdir()
        if export["format"] == "zip":
            with zipfile.ZipFile(path) as z:
                z.extract("project.db", out)
        else:
            with tarfile.open(path) as t:
                t.extract("project.db", out, filter="data")
        db = out / "project.db"
    con = sqlite3.connect(db)
    try:
        return {table: con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in export["row_counts"]}
    finally:
        con.close()


def _manifest(export: dict) -> dict:
    path = Path(export["path"])
    if export["format"] == "folder":
        return json.loads((path / "manifest.json").read_bytes())
    if export["format"] == "zip":
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("manifest.json"))
    with tarfile.open(path) as t:
        return json.loads(t.extractfile("manifest.json").read())


@pytest.mark.parametrize("fmt", ["tar.gz", "zip", "folder"])
def test_round_trip_into_a_fresh_home(app: App, made: Client, tmp_path: Path, fmt: str):
    export = made.call("exports.create", slug="alpha", format=fmt)
    assert export["format"] == fmt and export["include_secrets"] is False
    package = Path(export["path"])
    assert package.parent == app.projects.open("alpha").root / "exports"
    assert export["sha256"] == _sha(package if fmt != "folder" else package / "manifest.json")
    manifest = _manifest(export)
    assert manifest["format"] == mf.FORMAT and manifest["schema_version"] == latest_version("project")
    assert manifest["project"]["slug"] == "alpha" and manifest["row_counts"] == export["row_counts"]
    assert _package_db_counts(export, tmp_path) == export["row_counts"]
    listed = {f["path"]: f for f in manifest["files"]}
    assert export["row_counts"]["runs"] == 1 and export["row_counts"]["assets"] > 10
    assert "project.db" in listed and any(p.startswith("runs/") for p in listed)
    assert not any(p.startswith("exports/") or "/." in p or p.startswith(".") for p in listed)
    # Every asset but this export's own (recorded once the package was made) is in the package, with its file.
    source_assets = {i: a for i, a in all_assets(made).items() if a["kind"] != "export"}
    assert {a["storage_uri"] for a in source_assets.values()} <= set(listed)

    other = _fresh(tmp_path, "other-home")
    try:
        client = Client(other)
        got = client.call("exports.import", path=str(package))
        assert got["slug"] == "alpha" and got["id"] == manifest["project"]["id"]
        assert not got["id_changed"] and not got["slug_changed"]
        handle = other.projects.open("alpha")
        from iat.transfer import rows
        counts = handle.store.read(rows.counts, False)
        assert counts == {**manifest["row_counts"], "audit_events": manifest["row_counts"]["audit_events"] + 1}
        for path, entry in listed.items():
            if path != "project.db":
                assert _sha(handle.root / path) == entry["sha256"], path
        # It opens and serves: its assets, runs and files, owned by this home's user, in its own folder.
        assert set(all_assets(client)) == set(source_assets)
        runs = client.call("runs.list", slug="alpha")["items"]
        assert len(runs) == 1 and runs[0]["status"] == "done"
        one = next(a for a in source_assets.values() if a["kind"] == "reference")
        assert client.call("assets.read", slug="alpha", asset_id=one["id"])["size"] > 0
        assert client.call("projects.get", slug="alpha")["owner_user_id"] == other.current_user()["id"]
        storage = client.call("storage.get", slug="alpha")
        assert storage["local_project_root"] == str(handle.root)
        assert not (other.settings.home / "tmp").exists() or not any((other.settings.home / "tmp").iterdir())
    finally:
        other.close()


def test_export_is_recorded_audited_listed_and_not_packed_again(app: App, made: Client):
    events = []
    app.events.subscribe(lambda name, payload: events.append((name, payload)))
    first = made.call("exports.create", slug="alpha", format="tar.gz")
    second = made.call("exports.create", slug="alpha", format="zip")
    app.events.drain()
    page = made.call("exports.list", slug="alpha", limit=1)
    assert [e["id"] for e in page["items"]] == [second["id"]] and page["next_cursor"]
    rest = made.call("exports.list", slug="alpha", cursor=page["next_cursor"])
    assert [e["id"] for e in rest["items"]] == [first["id"]] and rest["next_cursor"] is None
    got = made.call("exports.get", slug="alpha", export_id=first["id"])
    assert got["sha256"] == first["sha256"] and got["path"] == first["path"]
    asset = made.call("assets.get", slug="alpha", asset_id=first["export_asset_id"])
    assert asset["kind"] == "export" and asset["sha256"] == first["sha256"]
    # The second package carries the first one's rows, never its file.
    manifest = _manifest(second)
    assert manifest["row_counts"]["project_exports"] == 1
    assert not any(f["path"].startswith("exports/") for f in manifest["files"])
    audit = made.call("audit.list", slug="alpha", limit=200)["items"]
    created = [a for a in audit if a["event_code"] == "export.created"]
    assert {a["payload_json"]["export_id"] for a in created} == {first["id"], second["id"]}
    assert ("export.created", {"project_id": first["project_id"], "slug": "alpha", "export_id": first["id"],
                               "format": "tar.gz", "sha256": first["sha256"]}) in events
    progress = [p for n, p in events if n == "export.progress" and p["export_id"] == first["id"]]
    assert progress and progress[-1]["done_bytes"] == progress[-1]["total_bytes"]


def test_exports_while_writes_go_on_are_consistent(app: App, made: Client, tmp_path: Path):
    stop = threading.Event()
    done = []

    def writer() -> None:
        while not stop.is_set():
            made.call("characters.create", slug="alpha", code=f"c{len(done)}", name="Extra",
                      identity_constraints_json={})
            done.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        exports = [made.call("exports.create", slug="alpha", format=fmt) for fmt in ("tar.gz", "zip", "folder") * 2]
    finally:
        stop.set()
        thread.join()
    assert len(done) > 2
    for export in exports:
        assert _package_db_counts(export, tmp_path) == export["row_counts"] == _manifest(export)["row_counts"]
        assert export["row_counts"]["audit_events"] >= export["row_counts"]["characters"]
    assert len({e["row_counts"]["characters"] for e in exports}) > 1  # the writes did interleave


def _secret_client(tmp_path: Path) -> tuple[App, Client]:
    application = _fresh(tmp_path, "secret-home", PASSPHRASE)
    client = Client(application)
    client.call("projects.create", slug="alpha", name="Alpha")
    client.call("secrets.set", slug="alpha", provider_code="openai", secret_name="api_key", value="sk-THE-SECRET")
    return application, client


def _raw_package(export: dict) -> bytes:
    """Every byte of the package as stored, and inflated (tar.gz: the tar stream; zip: each member)."""
    path = Path(export["path"])
    if export["format"] == "folder":
        return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())
    data = path.read_bytes()
    if export["format"] == "zip":
        with zipfile.ZipFile(path) as z:
            return data + b"".join(z.read(n) for n in z.namelist())
    import gzip
    return data + gzip.decompress(data)


def test_secrets_stay_out_unless_asked_for(tmp_path: Path):
    application, client = _secret_client(tmp_path)
    try:
        handle = application.projects.open("alpha")
        ciphertext = sqlite3.connect(handle.root / "project.db").execute(
            "SELECT secret_ciphertext FROM project_api_secrets").fetchone()[0]
        needle = ciphertext.encode() if isinstance(ciphertext, str) else bytes(ciphertext)
        for fmt in ("tar.gz", "zip", "folder"):
            export = client.call("exports.create", slug="alpha", format=fmt)
            raw = _raw_package(export)
            assert needle[:24] not in raw and b"sk-THE-SECRET" not in raw, fmt
            assert _manifest(export)["secrets"] == {"included": False}
            assert "project_api_secrets" not in export["row_counts"]
        kept = client.call("exports.create", slug="alpha", format="tar.gz", include_secrets=True)
        assert needle in _raw_package(kept) and b"sk-THE-SECRET" not in _raw_package(kept)
        assert _manifest(kept)["secrets"]["included"] is True and kept["row_counts"]["project_api_secrets"] == 1
    finally:
        application.close()


def test_an_older_schema_is_migrated(made: Client, tmp_path: Path):
    """A package made before migrations 4 to 6 (run job claims, S3 sync state, agent dispatches) imports at the
    latest schema."""
    export = made.call("exports.create", slug="alpha", format="folder")
    package = tmp_path / "old-package"
    shutil.copytree(export["path"], package)
    con = sqlite3.connect(package / "project.db")
    con.executescript("DROP TABLE run_job_claims; DROP TABLE storage_sync_objects; DROP TABLE agent_dispatches; "
                      "DELETE FROM schema_migrations WHERE version > 3;")
    con.commit()
    con.execute("VACUUM")
    con.close()
    manifest = json.loads((package / "manifest.json").read_bytes())
    manifest["schema_version"] = 3
    del manifest["row_counts"]["storage_sync_objects"]
    manifest["row_counts"].pop("agent_dispatches", None)
    for entry in manifest["files"]:
        if entry["path"] == "project.db":
            entry.update(sha256=_sha(package / "project.db"), size=(package / "project.db").stat().st_size)
    (package / "manifest.json").write_bytes(mf.dumps(manifest))

    other = _fresh(tmp_path, "other-home")
    try:
        got = Client(other).call("exports.import", path=str(package))
        assert got["schema_version"] == 3
        handle = other.projects.open(got["slug"])
        assert handle.store.schema_version() == latest_version("project")
        assert Client(other).call("runs.list", slug=got["slug"])["items"]
    finally:
        other.close()


def test_taken_slug_and_id_get_new_ones(app: App, made: Client, tmp_path: Path):
    export = made.call("exports.create", slug="alpha", format="zip")
    source_id = export["project_id"]
    # Back into the home it came from: slug and id are both taken.
    got = made.call("exports.import", path=export["path"])
    assert got["slug"] == "alpha-2" and got["slug_changed"] and got["id_changed"] and got["id"] != source_id
    assert made.call("projects.get", slug="alpha-2")["id"] == got["id"]
    handle = app.projects.open("alpha-2")

    def project_ids() -> set[str]:
        from iat.db.models import Asset, AuditEvent, Run
        return {r.project_id for m in (Asset, AuditEvent, Run) for r in m.select(m.project_id)}

    assert handle.store.read(project_ids) == {got["id"]}  # every row moved to the new id
    # A slug asked for that is taken is the caller's to change; a free one is used.
    err = made.error("exports.import", path=export["path"], slug="alpha")
    assert err.name == "conflict"
    assert made.call("exports.import", path=export["path"], slug="beta")["slug"] == "beta"
    assert {p["slug"] for p in made.call("projects.list")["items"]} == {"alpha", "alpha-2", "beta"}
    app_audit = made.call("audit.list", limit=50)["items"]
    imported = [a for a in app_audit if a["event_code"] == "project.imported"]
    assert {a["project_id"] for a in imported} == {got["id"], app.projects.open("beta").id}
    own = made.call("audit.list", slug="alpha-2", limit=200)["items"]
    assert [a["payload_json"]["source_project_id"] for a in own if a["event_code"] == "project.imported"] == \
        [source_id]


def test_rest_routes(app: App, made: Client, tmp_path: Path):
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    from iat.rpc.http import HttpTransport

    executor = ThreadPoolExecutor(2)
    transport = HttpTransport(made.dispatcher, executor, 0, app.settings.max_message_bytes, ())
    transport.start()
    try:
        def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
            conn = http.client.HTTPConnection("127.0.0.1", transport.port, timeout=120)
            headers = {"Authorization": f"Bearer {app.token}", "Content-Type": "application/json"}
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            out = resp.status, json.loads(resp.read())
            conn.close()
            return out

        status, export = call("POST", "/api/projects/alpha/exports", {"format": "zip"})
        assert status == 200 and export["format"] == "zip"
        status, page = call("GET", "/api/projects/alpha/exports")
        assert status == 200 and [e["id"] for e in page["items"]] == [export["id"]]
        status, one = call("GET", f"/api/projects/alpha/exports/{export['id']}")
        assert status == 200 and one["sha256"] == export["sha256"]
        status, got = call("POST", "/api/exports/import", {"path": export["path"], "slug": "gamma"})
        assert status == 200 and got["slug"] == "gamma"
        status, err = call("POST", "/api/exports/import", {"path": str(tmp_path / "nothing.tar.gz")})
        assert status == 404 and err["error"]["data"]["name"] == "not_found"
    finally:
        transport.stop()
        executor.shutdown()
