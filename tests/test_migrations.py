"""Migrations of real older databases: the files under tests/fixtures/v<N>/ were made by the code of release N
(tests/fixtures/make_fixtures.py says how). Each is copied into a temporary IAT_HOME and opened by the current
code, through the real `iat-sidecar serve --stdio` process and in process; afterwards every migration of the chain
is recorded, the schema is the one a new database gets, a backup of the old file lies beside each upgraded one,
and every row of the release is still there. A newer database is refused with both versions named, and a failing
step leaves the database exactly as it was.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import peewee
import pytest

from iat.errors import MigrationFailed

from iat.app import App
from iat.db import migrations
from iat.db.schema import Index
from iat.db.store import Store
from iat.errors import SchemaVersionError
from iat.rpc.protocol import Dispatcher, Session
from iat.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "MANIFEST.json").is_file())
SIDECAR_BIN = Path(sys.executable).with_name("iat-sidecar")
REPLY_TIMEOUT_S = 30.0


def test_there_are_fixtures_of_the_first_release():
    assert "v1" in RELEASES, RELEASES


# --- the fixture files, installed into a home ---


def kind_of(path: Path) -> migrations.Chain:
    return "app" if path.name == "app.db" else "project"


def install(release: str, home: Path) -> list[Path]:
    """Copies a release's databases into `home` as the sidecar lays them out; points the index at the copies."""
    source = FIXTURES / release
    files = []
    for db in sorted(source.rglob("*.db")):
        target = home / db.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(db, target)
        files.append(target)
    for folder in (home / "projects").iterdir():
        (folder / "assets").mkdir(exist_ok=True)
    conn = sqlite3.connect(home / "app.db")
    with conn:
        for (slug,) in conn.execute("SELECT slug FROM project_index").fetchall():
            conn.execute("UPDATE project_index SET root_dir = ? WHERE slug = ?", (str(home / "projects" / slug), slug))
    conn.close()
    for path in files:
        assert not path.with_name(path.name + "-wal").exists(), f"{path}: a WAL left beside the fixture copy"
    return files


def rows(path: Path) -> dict[str, list[dict]]:
    """Every row of every table, as dicts, in a stable order."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        out = {}
        for table in tables:
            found = [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
            out[table] = sorted(found, key=lambda r: json.dumps(r, sort_keys=True, default=str))
        return out
    finally:
        conn.close()


def schema_of(path: Path) -> dict:
    """Tables (columns, foreign keys) and indexes (table, unique, key columns with their order) of a database."""
    conn = sqlite3.connect(path)
    try:
        tables, indexes = {}, {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"):
            tables[table] = {
                "columns": [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({table})")],
                "foreign_keys": sorted(tuple(r[2:]) for r in conn.execute(f"PRAGMA foreign_key_list({table})")),
            }
            for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                keys = [(r[2], r[3]) for r in conn.execute(f"PRAGMA index_xinfo({name})") if r[5]]
                indexes[name] = (table, unique, origin, keys)
        return {"tables": tables, "indexes": indexes}
    finally:
        conn.close()


def version_rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    finally:
        conn.close()


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.v*.bak"))


@pytest.fixture(scope="module")
def fresh_schemas(tmp_path_factory) -> dict[str, dict]:
    """What the current code builds in a new, empty database of each chain: an upgraded one must match it."""
    folder = tmp_path_factory.mktemp("fresh")
    out = {}
    for kind in ("app", "project"):
        path = folder / f"{kind}.db"
        Store.open_sqlite(path, kind).close()
        out[kind] = schema_of(path)
    return out


class Prepared:
    """The installed copies before anything opened them: their rows, schema and version."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.rows = {p: rows(p) for p in files}
        self.schema = {p: schema_of(p) for p in files}
        self.version = {p: max(v for v, _ in version_rows(p)) for p in files}


def check_upgraded(prepared: Prepared, fresh_schemas: dict) -> None:
    """Every migration ran, the schema is a new database's, a backup of the old file lies beside it, and every row
    of the release is still there with the values it had."""
    for path in prepared.files:
        kind = kind_of(path)
        chain = [(m.version, m.name) for m in migrations.chain(kind)]
        assert len(chain) == migrations.latest_version(kind)
        assert version_rows(path) == chain, f"{path}: not every migration of the {kind} chain is recorded"
        assert schema_of(path) == fresh_schemas[kind], f"{path}: the upgraded schema differs from a new database's"

        old = prepared.version[path]
        if old < migrations.latest_version(kind):
            found = backups(path)
            assert [b.name.split(".")[:2] for b in found] == [[path.stem, f"v{old}"]], found
            assert rows(found[0]) == prepared.rows[path], f"{found[0]} is not the file as the release left it"
            assert schema_of(found[0]) == prepared.schema[path]
        else:
            assert backups(path) == [], "a database already at the latest version was backed up"

        after = rows(path)
        for table, before in prepared.rows[path].items():
            if table == "schema_migrations":  # the release's own history, then the new steps
                assert [r for r in after[table] if r["version"] <= old] == before
                continue
            columns = set(before[0]) if before else set()
            kept = sorted(({c: r[c] for c in columns} for r in after[table]),
                          key=lambda r: json.dumps(r, sort_keys=True, default=str))
            assert kept == before, f"{path}: rows of {table} changed in the upgrade"


# --- clients: the real process over stdio, and the dispatcher in process ---


class StdioSidecar:
    """`iat-sidecar serve --stdio` on a home; one call at a time, notifications skipped."""

    def __init__(self, home: Path):
        argv = [str(SIDECAR_BIN)] if SIDECAR_BIN.exists() else [sys.executable, "-m", "iat"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
        env.update(IAT_HOME=str(home), PYTHONUNBUFFERED="1")
        self.stderr_path = home.parent / f"{home.name}.stderr.log"
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(argv + ["serve", "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next = 0
        self.ready = self._message()
        assert self.ready.get("method") == "sidecar.ready", self.ready

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _message(self) -> dict:
        try:
            line = self._lines.get(timeout=REPLY_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"the sidecar said nothing for {REPLY_TIMEOUT_S} s:\n{self.log()}") from None
        assert line is not None, f"the sidecar closed stdout (exit {self.proc.poll()}):\n{self.log()}"
        return json.loads(line)

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def reply(self, method: str, **params) -> dict:
        self._next += 1
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self._next, "method": method,
                                          "params": params}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            message = self._message()
            if message.get("id") == self._next:
                return message
            assert "id" not in message, f"a reply nobody asked for: {message}"

    def stop(self) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=10)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._stderr.close()


class InProcess:
    """The App and dispatcher of this interpreter, answering the same message shapes."""

    def __init__(self, home: Path):
        self.app = App(Settings.from_env({}, home=home))
        self.dispatcher = Dispatcher(self.app)
        self.session = Session("inproc", authenticated=True)

    def reply(self, method: str, **params) -> dict:
        return self.dispatcher.handle_message({"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                                              self.session)

    def stop(self) -> int:
        self.app.close()
        return 0

    def kill(self) -> None:
        self.app.close()


def result(client, method: str, **params) -> Any:
    reply = client.reply(method, **params)
    assert "error" not in reply, f"{method} failed: {reply}"
    return reply["result"]


def error(client, method: str, **params) -> dict:
    reply = client.reply(method, **params)
    assert "error" in reply, f"{method} should have failed: {reply}"
    return reply["error"]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def newest_first(found: list[dict]) -> list[dict]:
    return sorted(found, key=lambda r: (ts(r["created_at"]), r["id"]), reverse=True)


def check_release_data(client, prepared: Prepared, home: Path) -> None:
    """Every project, status, audit row and asset the release wrote answers through the commands."""
    app_rows = prepared.rows[home / "app.db"]
    index = {r["slug"]: r for r in app_rows["project_index"]}
    listed = result(client, "projects.list")["items"]
    assert [(p["slug"], p["id"], p["status"], p["name"]) for p in listed] == \
        [(s, index[s]["id"], index[s]["status"], index[s]["name"]) for s in sorted(index)]
    assert {p["status"] for p in listed} == {"active", "archived"}  # the fixtures hold both
    assert [p["slug"] for p in result(client, "projects.list", status="archived")["items"]] == \
        sorted(s for s in index if index[s]["status"] == "archived")

    for slug, entry in index.items():
        db = prepared.rows[home / "projects" / slug / "project.db"]
        (project,) = db["projects"]
        got = result(client, "projects.get", slug=slug)
        assert (got["id"], got["name"], got["description"], got["status"], got["settings_json"]) == \
            (project["id"], project["name"], project["description"], project["status"],
             json.loads(project["settings_json"]))
        assert got["root_dir"] == str(home / "projects" / slug)
        storage = result(client, "storage.get", slug=slug)
        (policy,) = db["project_storage"]
        assert (storage["s3_bucket"], storage["s3_prefix"]) == (policy["s3_bucket"], policy["s3_prefix"])

        audit = result(client, "audit.list", slug=slug, limit=500)
        assert [(e["id"], e["event_code"]) for e in audit["items"]] == \
            [(e["id"], e["event_code"]) for e in newest_first(db["audit_events"])]
        assert audit["next_cursor"] is None and audit["items"]

        expected = newest_first(db["assets"])
        assert expected, f"the {slug} fixture holds no assets"
        walked, cursor = [], None
        while True:
            page = result(client, "assets.list", slug=slug, limit=3, **({"cursor": cursor} if cursor else {}))
            walked += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [a["id"] for a in walked] == [a["id"] for a in expected]
        for got_asset, row in zip(walked, expected):
            assert (got_asset["kind"], got_asset["storage_uri"], got_asset["sha256"], got_asset["mime_type"],
                    got_asset["width"], got_asset["metadata_json"], ts(got_asset["created_at"])) == \
                (row["kind"], row["storage_uri"], row["sha256"], row["mime_type"], row["width"],
                 json.loads(row["metadata_json"]), ts(row["created_at"]))
        kind = expected[0]["kind"]
        by_kind = result(client, "assets.list", slug=slug, kind=kind, limit=500)["items"]
        assert [a["id"] for a in by_kind] == [a["id"] for a in expected if a["kind"] == kind]
        assert result(client, "assets.get", slug=slug, asset_id=expected[-1]["id"])["id"] == expected[-1]["id"]

    app_audit = result(client, "audit.list", limit=500)["items"]
    assert [(e["id"], e["event_code"], e["payload_json"]) for e in app_audit] == \
        [(e["id"], e["event_code"], json.loads(e["payload_json"])) for e in newest_first(app_rows["app_audit_events"])]
    assert app_audit, "the fixtures hold a deleted project's app audit row"


def start(how: str, home: Path):
    client = StdioSidecar(home) if how == "process" else InProcess(home)
    if how == "process":
        params = client.ready["params"]
        assert params["schema_version"] == {"app": migrations.latest_version("app"),
                                            "project": migrations.latest_version("project")}
    return client


# --- the upgrade ---


@pytest.mark.parametrize("how", ["process", "in_process"])
@pytest.mark.parametrize("release", RELEASES)
def test_release_databases_upgrade_with_their_data(tmp_path: Path, fresh_schemas, release: str, how: str):
    home = tmp_path / "home"
    prepared = Prepared(install(release, home))
    manifest = json.loads((FIXTURES / release / "MANIFEST.json").read_text())
    for path in prepared.files:  # the copies are the files the release made
        assert prepared.version[path] == manifest["files"][str(path.relative_to(home))]["schema_version"]

    client = start(how, home)
    try:
        check_release_data(client, prepared, home)
        assert client.stop() == 0
    finally:
        client.kill()
    check_upgraded(prepared, fresh_schemas)

    # A second start migrates nothing (no second backup) and the upgraded databases take writes.
    taken = {p: backups(p) for p in prepared.files}
    again = start(how, home)
    try:
        slug = sorted(r["slug"] for r in prepared.rows[home / "app.db"]["project_index"])[0]
        assert result(again, "projects.update", slug=slug, description="after the upgrade")["description"] == \
            "after the upgrade"
        assert result(again, "audit.list", slug=slug)["items"][0]["event_code"] == "project.updated"
        assert again.stop() == 0
    finally:
        again.kill()
    assert {p: backups(p) for p in prepared.files} == taken


# --- refusals ---


def test_new_database_is_migrated_and_recorded(tmp_path: Path):
    for kind in ("app", "project"):
        path = tmp_path / f"{kind}.db"
        Store.open_sqlite(path, kind).close()
        assert version_rows(path) == [(m.version, m.name) for m in migrations.chain(kind)]
    assert not list(tmp_path.glob("*.bak"))  # nothing to back up in a new database


def future(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', '2030-01-01T00:00:00.000000Z')",
                     (version,))
    conn.close()


def test_newer_app_db_is_refused_through_the_process(tmp_path: Path):
    home = tmp_path / "home"
    install("v1", home)
    newer = migrations.latest_version("app") + 1
    future(home / "app.db", newer)
    before = rows(home / "app.db")

    sidecar = StdioSidecar(home)
    try:
        # app.db opens at its first use, not at start: the sidecar comes up and answers what needs no database...
        assert result(sidecar, "system.ping")["pong"] is True
        # ... and the first call that needs it (any project or user call) gets the typed refusal, every time.
        for method in ("projects.list", "users.list"):
            err = error(sidecar, method)
            assert err["data"]["name"] == "schema_version_unsupported", err
            assert err["code"] == SchemaVersionError.code
            assert err["data"]["details"] == {"database_version": newer,
                                              "supported_version": migrations.latest_version("app")}
            assert str(newer) in err["message"] and str(migrations.latest_version("app")) in err["message"]
            assert "app" in err["message"]
        assert sidecar.stop() == 0
    finally:
        sidecar.kill()
    assert rows(home / "app.db") == before  # untouched: not migrated, not seeded
    assert backups(home / "app.db") == []


def test_newer_project_db_is_refused_through_the_process(tmp_path: Path):
    home = tmp_path / "home"
    install("v1", home)
    newer = migrations.latest_version("project") + 1
    future(home / "projects" / "alpha" / "project.db", newer)

    sidecar = StdioSidecar(home)
    try:
        err = error(sidecar, "projects.get", slug="alpha")
        assert err["data"]["name"] == "schema_version_unsupported", err
        assert err["data"]["details"] == {"database_version": newer,
                                          "supported_version": migrations.latest_version("project")}
        assert result(sidecar, "projects.get", slug="beta")["slug"] == "beta"  # the others still open
        assert sidecar.stop() == 0
    finally:
        sidecar.kill()
    assert max(v for v, _ in version_rows(home / "projects" / "alpha" / "project.db")) == newer


def test_newer_database_is_refused_naming_both_versions(tmp_path: Path):
    path = tmp_path / "project.db"
    Store.open_sqlite(path, "project").close()
    future(path, 70)
    with pytest.raises(SchemaVersionError) as info:
        Store.open_sqlite(path, "project")
    assert "70" in info.value.message and str(migrations.latest_version("project")) in info.value.message
    assert info.value.details == {"database_version": 70, "supported_version": migrations.latest_version("project")}


def test_foreign_database_is_refused(tmp_path: Path):
    path = tmp_path / "project.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something_else (x)")
    conn.close()
    with pytest.raises(SchemaVersionError, match="not created by IAT Toolkit"):
        Store.open_sqlite(path, "project")
    assert [r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")] == ["something_else"]


# --- a failing step ---


def breakable_step(fixture_version: int) -> tuple[migrations.Migration, Index]:
    """The first project migration a release's file still needs, and the last index it creates: pre-creating an
    index of that name makes that very step fail for real (CREATE INDEX of a name already taken) after the
    migration's earlier operations ran, so the whole migration must roll back."""
    pending = [m for m in migrations.chain("project") if m.version > fixture_version]
    assert pending, (f"no project migration above version {fixture_version}: make the fixtures of the current "
                     "release (tests/fixtures/make_fixtures.py) and test the step after it")
    step = pending[0]
    indexes = [op for op in step.operations if isinstance(op, Index)]
    assert indexes, f"migration {step.version} ({step.name}) creates no index to collide with"
    return step, indexes[-1]


@pytest.mark.parametrize("how", ["process", "in_process"])
def test_a_failing_migration_step_rolls_back(tmp_path: Path, how: str):
    home = tmp_path / "home"
    install("v1", home)
    alpha = home / "projects" / "alpha" / "project.db"
    step, index = breakable_step(max(v for v, _ in version_rows(alpha)))
    conn = sqlite3.connect(alpha)
    with conn:
        conn.execute(f"CREATE INDEX {index.name} ON {index.table} (id)")  # same name, other columns
    conn.close()
    before = Prepared([alpha])

    client = start(how, home)
    try:
        err = error(client, "projects.get", slug="alpha")
        # A client gets a typed migration_failed naming the migration and the version the database stays at.
        assert (err["code"], err["data"]["name"]) == (-32031, "migration_failed"), err
        assert err["data"]["details"] == {"chain": "project", "version": step.version, "name": step.name}
        assert f"stays at version {before.version[alpha]}" in err["message"]
        assert "Traceback" not in json.dumps(err)
        # The failed project stays closed and the next call tries again (and fails the same way) ...
        assert error(client, "assets.list", slug="alpha")["data"]["name"] == err["data"]["name"]
        # ... while the other project upgrades as usual.
        assert result(client, "projects.get", slug="beta")["slug"] == "beta"
        assert client.stop() == 0
    finally:
        client.kill()
    if how == "process":
        assert f"index {index.name} already exists" in (home / "logs" / "sidecar.log").read_text()

    assert max(v for v, _ in version_rows(alpha)) == before.version[alpha] < step.version
    assert schema_of(alpha) == before.schema[alpha], "a table, column or index of the failed step remained"
    assert rows(alpha) == before.rows[alpha]


def test_a_failing_step_raises_migration_failed_with_the_database_error(tmp_path: Path):
    home = tmp_path / "home"
    install("v1", home)
    alpha = home / "projects" / "alpha" / "project.db"
    step, index = breakable_step(max(v for v, _ in version_rows(alpha)))
    conn = sqlite3.connect(alpha)
    with conn:
        conn.execute(f"CREATE INDEX {index.name} ON {index.table} (id)")
    conn.close()
    before = Prepared([alpha])
    with pytest.raises(MigrationFailed, match=f"index {index.name} already exists") as info:
        Store.open_sqlite(alpha, "project")
    assert isinstance(info.value.__cause__, peewee.OperationalError)
    assert max(v for v, _ in version_rows(alpha)) == before.version[alpha]
    assert schema_of(alpha) == before.schema[alpha]
    assert rows(alpha) == before.rows[alpha]


# --- the in-process refusal of a newer project, and PostgreSQL ---


def test_sidecar_refuses_a_newer_project_with_a_typed_error(client, project, app):
    path = Path(project["root_dir"]) / "project.db"
    app.projects.close("alpha")
    future(path, 99)
    err = client.error("projects.get", slug="alpha")
    assert err.name == "schema_version_unsupported" and err.details["database_version"] == 99


def test_postgres_migrations_are_idempotent(pg_database: str):
    store = Store.open_postgres(pg_database, "project")
    assert store.schema_version() == migrations.latest_version("project")
    store.close()
    again = Store.open_postgres(pg_database, "project")  # a second start migrates nothing
    assert again.schema_version() == migrations.latest_version("project")
    again.close()
