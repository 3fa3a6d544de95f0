"""Migrations: ordered, recorded, one transaction each, a backup before an existing database changes, a newer
database refused with both versions named."""

from __future__ import annotations

import sqlite3
import sys
import types
from pathlib import Path

import pytest

from iat.db import migrations
from iat.db.schema import Index, Table, created, text, uuid_pk
from iat.db.store import Store
from iat.errors import SchemaVersionError


@pytest.fixture
def second_migration(monkeypatch):
    """Pretends the code has a project migration 0002 (as a later release will)."""
    module = types.ModuleType("iat.db.migrations.project_0002_test")
    module.NAME = "notes_table"
    module.OPERATIONS = (Table("notes", (uuid_pk(), text("body"), created())),
                         Index("ix_notes_created", "notes", ("created_at DESC",)))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(migrations._CHAINS, "project", migrations._CHAINS["project"] + ("project_0002_test",))
    return module


def test_new_database_is_migrated_and_recorded(tmp_path: Path):
    store = Store.open_sqlite(tmp_path / "project.db", "project")
    store.close()
    rows = sqlite3.connect(tmp_path / "project.db").execute("SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [(1, "canonical_schema")]
    assert not list(tmp_path.glob("*.bak"))  # nothing to back up in a new database


def test_older_database_is_backed_up_then_migrated(tmp_path: Path, second_migration):
    path = tmp_path / "project.db"
    # A database made by the previous release: version 1 only, with a row in it.
    conn = sqlite3.connect(path)
    import peewee

    db = peewee.SqliteDatabase(str(path))
    with db.connection_context():
        # migrate to exactly version 1
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(migrations._CHAINS, "project", ("project_0001_canonical",))
            migrations.migrate(db, "project")
    conn.execute("INSERT INTO app_users VALUES ('00000000-0000-4000-8000-000000000001', 'u', 'U', NULL, 1, "
                 "'2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()

    store = Store.open_sqlite(path, "project")
    assert store.schema_version() == 2
    store.close()
    backups = list(tmp_path.glob("project.v1.*.bak"))
    assert len(backups) == 1
    backup = sqlite3.connect(backups[0])
    assert backup.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (1,)
    assert backup.execute("SELECT username FROM app_users").fetchall() == [("u",)]
    migrated = sqlite3.connect(path)
    assert migrated.execute("SELECT username FROM app_users").fetchall() == [("u",)]
    assert "notes" in {r[0] for r in migrated.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_failed_migration_leaves_the_database_as_it_was(tmp_path: Path, monkeypatch):
    path = tmp_path / "project.db"
    Store.open_sqlite(path, "project").close()
    broken = types.ModuleType("iat.db.migrations.project_0002_broken")
    broken.NAME = "broken"
    broken.OPERATIONS = (Table("half_done", (uuid_pk(),)), Table("half_done", (uuid_pk(),)))  # second one fails
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setitem(migrations._CHAINS, "project", migrations._CHAINS["project"] + ("project_0002_broken",))
    with pytest.raises(Exception):
        Store.open_sqlite(path, "project")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (1,)
    assert "half_done" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_newer_database_is_refused_naming_both_versions(tmp_path: Path):
    path = tmp_path / "project.db"
    Store.open_sqlite(path, "project").close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (7, 'from_the_future', '2030-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError) as info:
        Store.open_sqlite(path, "project")
    assert "7" in info.value.message and str(migrations.latest_version("project")) in info.value.message
    assert info.value.details == {"database_version": 7, "supported_version": migrations.latest_version("project")}


def test_foreign_database_is_refused(tmp_path: Path):
    path = tmp_path / "project.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something_else (x)")
    conn.close()
    with pytest.raises(SchemaVersionError):
        Store.open_sqlite(path, "project")


def test_sidecar_refuses_a_newer_project_with_a_typed_error(client, project, app):
    path = Path(project["root_dir"]) / "project.db"
    app.projects.close("alpha")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()
    err = client.error("projects.get", slug="alpha")
    assert err.name == "schema_version_unsupported" and err.details["database_version"] == 99


def test_postgres_migrations_are_idempotent(pg_database: str):
    store = Store.open_postgres(pg_database, "project")
    assert store.schema_version() == migrations.latest_version("project")
    store.close()
    again = Store.open_postgres(pg_database, "project")  # a second start migrates nothing
    assert again.schema_version() == migrations.latest_version("project")
    again.close()
