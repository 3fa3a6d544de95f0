"""projects.move: a SQLite project onto the studio's PostgreSQL through the export format, keeping its slug, id,
rows and files; a second workstation attaches it; a failed move leaves the SQLite project as it was and no schema
on the server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from iat.app import App
from iat.settings import Settings
from iat.transfer import rows
from support import Client, studio_schemas

pytestmark = pytest.mark.postgres

SHOT = {"job_key": "street", "scene": "a rainy city street at dusk", "characters": ["mira"], "time_of_day": "dusk"}


@pytest.fixture
def workstations(tmp_path, pg_database):
    apps = [App(Settings(home=tmp_path / name, studio_database_url=pg_database)) for name in ("ws-a", "ws-b")]
    yield [Client(app) for app in apps]
    for app in apps:
        app.close()


def _populated(client: Client, slug: str = "alpha") -> dict:
    """A SQLite project with a character, a finished run (its pictures are assets) and its audit trail."""
    made = client.call("projects.create", slug=slug, name="Alpha")
    client.call("characters.create", slug=slug, code="mira", name="Mira",
                identity_constraints_json={"appearance": "long light-blue hair", "palette": ["#c0392b"]})
    run = client.call("runs.start", slug=slug, shots=[SHOT], candidates=2, seed=3)
    assert client.app.runner.wait_idle(120), "the run did not finish"
    assert client.call("runs.get", slug=slug, run_id=run["id"])["status"] == "done"
    return {"project": made, "run": run}


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file of the project folder but its database."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith("project.")}


def _state(client: Client, slug: str = "alpha") -> dict:
    handle = client.app.projects.open(slug)
    return {"counts": handle.store.read(rows.counts), "files": _files(handle.root), "backend": handle.backend}


def test_move_keeps_rows_and_files_and_another_workstation_attaches(workstations, pg_database):
    a, b = workstations
    made = _populated(a)
    before = _state(a)
    assert before["backend"] == "sqlite" and before["counts"]["assets"] > 0 and before["files"]
    root = Path(made["project"]["root_dir"])

    moved = a.call("projects.move", slug="alpha")
    assert moved["project"]["id"] == made["project"]["id"] and moved["project"]["slug"] == "alpha"
    assert moved["project"]["backend"] == "postgres" and moved["project"]["root_dir"] == str(root)
    assert moved["files"] == len(before["files"])
    assert studio_schemas(pg_database) == {moved["db_schema"]}
    assert not (root / "project.db").exists()
    assert Path(moved["old_database"]).is_file()  # the old database is kept (in the trash)
    assert not list(root.parent.glob(".alpha.*"))  # no set-aside folder left

    after = _state(a)
    assert after["backend"] == "postgres"
    assert after["files"] == before["files"]
    # Every row came over; the move adds its audit rows (project.imported, project.moved).
    assert {t: n for t, n in after["counts"].items() if t != "audit_events"} == \
           {t: n for t, n in before["counts"].items() if t != "audit_events"}
    assert after["counts"]["audit_events"] == before["counts"]["audit_events"] + 2
    assert a.call("audit.list", slug="alpha")["items"][0]["event_code"] == "project.moved"
    assert a.call("runs.get", slug="alpha", run_id=made["run"]["id"])["status"] == "done"
    assets = a.call("assets.list", slug="alpha", limit=500)["items"]
    assert assets and all((root / x["storage_uri"]).is_file() for x in assets if x["storage_backend"] == "local")

    # Another workstation finds it in the studio's catalog and opens it: the same rows.
    listed = b.call("studio.projects.list")["items"]
    assert [(p["slug"], p["attached"]) for p in listed] == [("alpha", False)]
    b.call("projects.attach", slug="alpha")
    assert b.call("studio.projects.list")["items"][0]["attached"] is True
    assert b.call("runs.get", slug="alpha", run_id=made["run"]["id"])["status"] == "done"
    assert {x["id"] for x in b.call("assets.list", slug="alpha", limit=500)["items"]} == {x["id"] for x in assets}

    # Moving it again is a conflict: it is on the studio already.
    assert a.error("projects.move", slug="alpha").name == "conflict"


def test_a_move_failing_after_the_rows_are_copied_leaves_the_project_as_it_was(workstations, pg_database):
    a, b = workstations
    made = _populated(a)
    before = _state(a)
    b.call("projects.create", slug="alpha", name="B's alpha", backend="postgres")  # the studio's slug is taken
    theirs = studio_schemas(pg_database)

    # The rows are copied into a new schema, then the catalog refuses the slug: the import is undone.
    error = a.error("projects.move", slug="alpha")
    assert error.name == "conflict" and "alpha" in error.message
    assert studio_schemas(pg_database) == theirs  # no schema of A's project left on the server
    assert _state(a) == before  # still SQLite, same rows, same files
    got = a.call("projects.get", slug="alpha")
    assert got["backend"] == "sqlite" and got["id"] == made["project"]["id"]
    assert (Path(got["root_dir"]) / "project.db").is_file()
    assert not list(Path(got["root_dir"]).parent.glob(".alpha.*"))
    assert a.call("runs.get", slug="alpha", run_id=made["run"]["id"])["status"] == "done"
    assert [p["slug"] for p in a.call("projects.list")["items"]] == ["alpha"]
    assert not list((a.app.settings.home / "tmp").glob("*"))  # no package left over
    # and the project still works: a change is written to its project.db
    a.call("projects.update", slug="alpha", description="still here")
    assert a.call("projects.get", slug="alpha")["description"] == "still here"


def test_an_unreachable_studio_changes_nothing(tmp_path):
    app = App(Settings(home=tmp_path / "down", studio_database_url="postgresql://iat:pw@127.0.0.1:9/studio"))
    try:
        client = Client(app)
        client.call("projects.create", slug="alpha", name="Alpha")
        before = _state(client)
        assert client.error("projects.move", slug="alpha").name == "database_unavailable"
        assert _state(client) == before
        assert client.error("studio.projects.list").name == "database_unavailable"
    finally:
        app.close()


def test_move_without_a_studio_is_a_conflict(client: Client, project: dict):
    error = client.error("projects.move", slug="alpha")
    assert error.name == "conflict" and "IAT_STUDIO_DATABASE_URL" in error.message
    assert client.call("projects.get", slug="alpha")["backend"] == "sqlite"
