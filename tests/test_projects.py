"""Projects, storage policy, users and audit through the in-process client (the dispatcher every transport uses)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from iat.app import App
from iat.settings import Settings

from support import Client


def audit_codes(client: Client, slug: str | None = None) -> list[str]:
    params = {"slug": slug} if slug else {}
    return [e["event_code"] for e in client.call("audit.list", **params, limit=500)["items"]]


def project_rows(root: str, table: str) -> list[tuple]:
    return sqlite3.connect(Path(root) / "project.db").execute(f"SELECT * FROM {table}").fetchall()


def test_local_user_is_seeded_once(client: Client, app: App):
    users = client.call("users.list")["items"]
    assert [u["username"] for u in users] == ["local"]
    assert client.call("users.get", username="local")["id"] == users[0]["id"]
    assert client.error("users.get", username="nobody").name == "not_found"
    again = App(app.settings)  # a second start seeds nothing new
    assert len(Client(again).call("users.list")["items"]) == 1
    again.close()


def test_create_makes_a_self_contained_project_folder(client: Client, project: dict, home: Path):
    root = Path(project["root_dir"])
    assert root == home / "projects" / "alpha"
    assert (root / "project.db").is_file() and (root / "assets").is_dir()
    assert project["status"] == "active" and project["slug"] == "alpha"
    # The project's own database holds its owner, itself, its storage policy and its audit trail.
    assert len(project_rows(project["root_dir"], "app_users")) == 1
    assert [r[0] for r in project_rows(project["root_dir"], "projects")] == [project["id"]]
    assert len(project_rows(project["root_dir"], "project_storage")) == 1
    assert audit_codes(client, "alpha") == ["project.created"]
    assert not [p for p in (home / "projects").iterdir() if p.name.startswith(".")]  # no staging leftovers


@pytest.mark.parametrize("slug", ["", "A", "has space", "-lead", "trail-", "x" * 64, "../up", "dot.dot", "ü"])
def test_bad_slugs_are_refused_and_change_nothing(client: Client, slug: str, home: Path):
    assert client.error("projects.create", slug=slug, name="X").name == "invalid_params"
    assert client.call("projects.list")["items"] == []
    assert not (home / "projects").exists() or not any((home / "projects").iterdir())


def test_duplicate_slug_is_a_conflict(client: Client, project: dict):
    err = client.error("projects.create", slug="alpha", name="Again")
    assert err.name == "conflict"
    assert client.call("projects.get", slug="alpha")["name"] == "Alpha"


def test_a_non_empty_target_folder_is_never_overwritten(client: Client, tmp_path: Path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "precious.txt").write_text("keep")
    err = client.error("projects.create", slug="beta", name="B", local_project_root=str(target))
    assert err.name == "conflict"
    assert (target / "precious.txt").read_text() == "keep"
    assert client.call("projects.list")["items"] == []


def test_custom_project_root(client: Client, tmp_path: Path):
    out = client.call("projects.create", slug="beta", name="B", local_project_root=str(tmp_path / "elsewhere"))
    assert out["root_dir"] == str(tmp_path / "elsewhere")
    assert client.call("storage.get", slug="beta")["local_project_root"] == str(tmp_path / "elsewhere")


def test_update_archive_unarchive_each_audited(client: Client, project: dict):
    out = client.call("projects.update", slug="alpha", name="Alpha 2", settings_json={"style": "ink"})
    assert (out["name"], out["settings_json"], out["description"]) == ("Alpha 2", {"style": "ink"}, "")
    assert out["updated_at"] > project["updated_at"]
    assert client.call("projects.archive", slug="alpha")["status"] == "archived"
    assert [p["status"] for p in client.call("projects.list", status="archived")["items"]] == ["archived"]
    assert client.call("projects.list", status="active")["items"] == []
    assert client.call("projects.unarchive", slug="alpha")["status"] == "active"
    assert audit_codes(client, "alpha") == ["project.unarchived", "project.archived", "project.updated",
                                            "project.created"]
    listed = client.call("projects.list")["items"][0]
    assert (listed["name"], listed["status"]) == ("Alpha 2", "active")  # the index follows project.db


def test_delete_needs_confirmation_then_goes_to_trash(client: Client, project: dict, home: Path):
    err = client.error("projects.delete", slug="alpha")
    assert err.name == "confirmation_required" and err.http_status == 428
    assert client.call("projects.get", slug="alpha")["status"] == "active"
    assert client.error("projects.delete", slug="ghost").name == "not_found"
    out = client.call("projects.delete", slug="alpha", confirm=True)
    trash = Path(out["trash_dir"])
    assert trash.parent == home / "trash" and (trash / "project.db").is_file()
    assert not Path(project["root_dir"]).exists()
    assert client.error("projects.get", slug="alpha").name == "not_found"
    # The trashed database records its deletion; the app trail records it too.
    codes = [r[3] for r in sqlite3.connect(trash / "project.db").execute("SELECT * FROM audit_events")]
    assert "project.deleted" in codes
    assert audit_codes(client) == ["project.deleted"]
    # The slug is free again.
    assert client.call("projects.create", slug="alpha", name="New")["id"] != project["id"]


def test_delete_with_purge_removes_the_folder(client: Client, project: dict, home: Path):
    out = client.call("projects.delete", slug="alpha", confirm=True, purge=True)
    assert out["trash_dir"] is None
    assert not Path(project["root_dir"]).exists()
    assert not any((home / "trash").iterdir())


def test_storage_policy_set_and_validated(client: Client, project: dict):
    before = client.call("storage.get", slug="alpha")
    assert before["s3_enabled"] is False and before["local_project_root"] == project["root_dir"]
    # S3 on with no bucket stored: the request is well formed but conflicts with the stored policy.
    assert client.error("storage.set", slug="alpha", s3_enabled=True).name == "conflict"
    bad = [
        {"s3_enabled": True, "s3_bucket": None},  # turns S3 on and clears the bucket at once
        {"s3_bucket": "Not_A_Bucket"},
        {"s3_prefix": "/abs"},
        {"s3_prefix": "a/../b"},
        {"s3_endpoint_url": "ftp://x"},
        {"s3_endpoint_url": "http://user:pw@127.0.0.1:9000"},
        {"s3_region": "!!"},
        {"s3_enabled": "maybe"},
        {"unknown_field": 1},
    ]
    for params in bad:
        err = client.error("storage.set", slug="alpha", **params)
        assert err.name == "invalid_params", params
        assert "pw" not in str(err.to_object())  # rejected values are not echoed back
    assert client.call("storage.get", slug="alpha") == before
    assert audit_codes(client, "alpha") == ["project.created"]
    out = client.call("storage.set", slug="alpha", s3_enabled=True, s3_bucket="iat-alpha", s3_prefix="projects/alpha",
                      s3_region="eu-west-1", s3_endpoint_url="http://127.0.0.1:9000")
    assert (out["s3_enabled"], out["s3_bucket"], out["s3_prefix"]) == (True, "iat-alpha", "projects/alpha")
    cleared = client.call("storage.set", slug="alpha", s3_enabled=False, s3_endpoint_url=None)
    assert cleared["s3_endpoint_url"] is None and cleared["s3_bucket"] == "iat-alpha"
    assert audit_codes(client, "alpha")[:2] == ["storage.updated", "storage.updated"]
    assert client.error("storage.set", slug="alpha", local_project_root="/somewhere/else").name == "conflict"


def test_projects_are_isolated(client: Client, project: dict):
    beta = client.call("projects.create", slug="beta", name="Beta")
    client.call("projects.update", slug="beta", name="Beta 2")
    assert audit_codes(client, "alpha") == ["project.created"]
    assert [r[0] for r in project_rows(beta["root_dir"], "projects")] == [beta["id"]]
    assert all(r[1] == beta["id"] for r in project_rows(beta["root_dir"], "audit_events"))


def test_audit_and_asset_pages(client: Client, project: dict, app: App):
    for i in range(7):
        client.call("projects.update", slug="alpha", description=f"d{i}")
    first = client.call("audit.list", slug="alpha", limit=3)
    second = client.call("audit.list", slug="alpha", limit=3, cursor=first["next_cursor"])
    third = client.call("audit.list", slug="alpha", limit=3, cursor=second["next_cursor"])
    ids = [e["id"] for page in (first, second, third) for e in page["items"]]
    assert len(ids) == len(set(ids)) == 8 and third["next_cursor"] is None
    assert client.error("audit.list", slug="alpha", cursor="not-a-cursor").name == "invalid_params"
    assert client.call("assets.list", slug="alpha") == {"items": [], "next_cursor": None}
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.error("assets.get", slug="alpha", asset_id=missing).name == "not_found"
    assert client.error("assets.get", slug="alpha", asset_id="nope").name == "invalid_params"


def test_data_survives_a_restart(app: App, project: dict):
    app.close()
    again = App(app.settings)
    try:
        assert Client(again).call("projects.get", slug="alpha")["id"] == project["id"]
    finally:
        again.close()


def test_events_are_published_after_commit(client: Client, app: App, home: Path):
    """A subscriber that reads the project the moment an event reaches it, on connections of its own (which see
    committed rows only), finds the change the event announces in the project's database and in the index."""
    seen: list[tuple] = []  # (event name, slug, status in project.db, (name, status) in app.db's index)
    delivered = threading.Event()

    def on_event(*args) -> None:
        # The bus hands over (name, payload); older buses passed one JSON-RPC notification dict.
        name, payload = args if len(args) == 2 else (args[0]["method"], args[0].get("params") or {})
        try:
            slug = payload["slug"]
            project = sqlite3.connect(home / "projects" / slug / "project.db")
            index = sqlite3.connect(home / "app.db")
            try:
                status = project.execute("SELECT status FROM projects WHERE slug = ?", (slug,)).fetchone()
                indexed = index.execute("SELECT name, status FROM project_index WHERE slug = ?", (slug,)).fetchone()
            finally:
                project.close()
                index.close()
            seen.append((name, slug, status, indexed))
        except Exception as exc:  # noqa: BLE001 - the bus swallows a subscriber's errors: keep it for the assert
            seen.append((name, "read failed", repr(exc)))
        if name == "project.archived":
            delivered.set()

    unsubscribe = app.events.subscribe(on_event)
    try:
        client.call("projects.create", slug="gamma", name="G")
        client.call("projects.archive", slug="gamma")
        assert delivered.wait(5), f"project.archived never reached the subscriber; got {seen}"
    finally:
        unsubscribe()
    assert seen == [("project.created", "gamma", ("active",), ("G", "active")),
                    ("project.archived", "gamma", ("archived",), ("G", "archived"))]


def test_home_defaults_to_the_platform_data_dir(monkeypatch):
    monkeypatch.delenv("IAT_HOME", raising=False)
    settings = Settings.from_env({})
    assert "iat-toolkit" in str(settings.home) and settings.home.is_absolute()
    assert Settings.from_env({"IAT_HOME": "/tmp/x"}).home == Path("/tmp/x").resolve()


def test_ready_file_is_private(tmp_path: Path):
    from iat.lifecycle import write_ready_file

    write_ready_file(tmp_path / "sidecar.json", {"token": "t"})
    assert oct(os.stat(tmp_path / "sidecar.json").st_mode & 0o777) == "0o600"


def test_settings_keys_the_sidecar_reads_are_checked_and_the_others_kept(client: Client, tmp_path: Path):
    made = client.call("projects.create", slug="typed", name="Typed", settings_json={
        "background_engines": ["key"], "import_roots": [str(tmp_path)], "theme": {"dark": True}})
    assert made["settings_json"] == {"background_engines": ["key"], "import_roots": [str(tmp_path)],
                                     "theme": {"dark": True}}
    before = client.call("audit.list", slug="typed")["items"]
    for bad in ({"background_engines": ["no_such_engine"]}, {"background_engines": ["lanczos"]},
                {"background_engines": 5}, {"import_roots": ["relative/folder"]}, {"import_roots": "/tmp"}):
        assert client.error("projects.update", slug="typed", settings_json=bad).name == "invalid_params", bad
        assert client.error("projects.create", slug="other", name="O", settings_json=bad).name == "invalid_params"
    assert client.call("projects.get", slug="typed")["settings_json"] == made["settings_json"]
    assert client.call("audit.list", slug="typed")["items"] == before
    assert client.error("projects.get", slug="other").name == "not_found"


def test_a_project_folder_may_not_nest_in_or_hold_another(client, tmp_path):
    """Deleting (or exporting) the outer project would take the inner one's files with it."""
    outer = tmp_path / "outer"
    client.call("projects.create", slug="outer", name="Outer", local_project_root=str(outer))
    inner = client.error("projects.create", slug="inner", name="Inner", local_project_root=str(outer / "inner"))
    assert inner.name == "conflict" and "overlaps" in inner.message
    holding = client.error("projects.create", slug="inner", name="Inner", local_project_root=str(tmp_path))
    assert holding.name == "conflict"
    assert [p["slug"] for p in client.call("projects.list")["items"]] == ["outer"]
