"""Studio projects: made on the shared PostgreSQL (a schema each), found and opened by another workstation (another
App with its own home), isolated from each other, removed with their schema on purge."""

from __future__ import annotations

import pytest

from iat.app import App
from iat.settings import Settings
from support import Client, studio_schemas

pytestmark = pytest.mark.postgres


@pytest.fixture
def workstations(tmp_path, pg_database):
    apps = [App(Settings(home=tmp_path / name, studio_database_url=pg_database)) for name in ("ws-a", "ws-b")]
    yield [Client(app) for app in apps]
    for app in apps:
        app.close()


def test_a_project_made_on_one_workstation_opens_on_another(workstations, pg_database):
    a, b = workstations
    made = a.call("projects.create", slug="shared", name="Shared", backend="postgres")
    assert made["backend"] == "postgres"
    assert not (a.app.settings.projects_dir / "shared" / "project.db").exists()  # the rows are on the server
    assert studio_schemas(pg_database) == {"iat_p_" + made["id"].replace("-", "")}

    attached = b.call("projects.attach", slug="shared")
    assert attached["id"] == made["id"] and attached["backend"] == "postgres"
    assert attached["root_dir"] != made["root_dir"]  # each workstation keeps its own copy of the files

    a.call("projects.update", slug="shared", description="changed on A")
    assert b.call("projects.get", slug="shared")["description"] == "changed on A"
    b.call("projects.update", slug="shared", name="Renamed on B")  # B's user is one of the project's users
    assert a.call("projects.get", slug="shared")["name"] == "Renamed on B"
    assert b.call("audit.list", slug="shared")["items"][0]["actor_user_id"] == b.app.current_user()["id"]
    assert [e["event_code"] for e in b.call("audit.list", slug="shared")["items"]][:1] == ["project.updated"]


def test_projects_are_isolated_in_their_ownstudio_schemas(workstations, pg_database):
    a, _ = workstations
    one = a.call("projects.create", slug="one", name="One", backend="postgres")
    two = a.call("projects.create", slug="two", name="Two", backend="postgres")
    assert len(studio_schemas(pg_database)) == 2
    assert a.call("projects.get", slug="one")["id"] == one["id"]
    assert a.call("projects.get", slug="two")["id"] == two["id"]
    h1, h2 = a.app.projects.open("one"), a.app.projects.open("two")
    from iat.db.models import Project
    assert h1.store.read(lambda: [r["id"] for r in Project.select().dicts()]) == [one["id"]]
    assert h2.store.read(lambda: [r["id"] for r in Project.select().dicts()]) == [two["id"]]


def test_slug_taken_in_the_studio_is_a_conflict_and_leaves_nothing(workstations, pg_database):
    a, b = workstations
    a.call("projects.create", slug="taken", name="A's", backend="postgres")
    error = b.error("projects.create", slug="taken", name="B's", backend="postgres")
    assert error.name == "conflict"
    assert len(studio_schemas(pg_database)) == 1  # B's schema was dropped again
    assert not (b.app.settings.projects_dir / "taken").exists()
    assert b.call("projects.list")["items"] == []


def test_attach_unknown_slug_and_no_studio_configured(workstations, tmp_path):
    _, b = workstations
    assert b.error("projects.attach", slug="nowhere").name == "not_found"
    plain = App(Settings(home=tmp_path / "plain"))
    try:
        error = Client(plain).error("projects.create", slug="x", name="X", backend="postgres")
        assert error.name == "conflict" and "IAT_STUDIO_DATABASE_URL" in error.message
    finally:
        plain.close()


def test_unreachable_studio_is_database_unavailable_without_password(tmp_path):
    url = "postgresql://iat:s3cret-pw@127.0.0.1:9/studio"
    app = App(Settings(home=tmp_path / "down", studio_database_url=url))
    try:
        error = Client(app).error("projects.create", slug="x", name="X", backend="postgres")
        assert error.name == "database_unavailable"
        assert "s3cret-pw" not in str(error.to_object())
        assert not (app.settings.projects_dir / "x").exists()
    finally:
        app.close()


def test_purge_drops_the_schema_for_everyone(workstations, pg_database):
    a, b = workstations
    a.call("projects.create", slug="gone", name="Gone", backend="postgres")
    b.call("projects.attach", slug="gone")
    a.call("projects.delete", slug="gone", confirm=True, purge=True)
    assert studio_schemas(pg_database) == set()
    assert b.error("projects.attach", slug="again").name == "not_found"
