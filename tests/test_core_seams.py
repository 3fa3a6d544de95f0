"""The core's concurrency seams: nested transactions, stores closed under calls in flight, one slow project open
not stalling the others, an event bus that never waits on a subscriber, an App that owns its registry and redactor,
and the migration language's column and data steps (on SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import peewee
import pytest

from iat.app import App
from iat.db import migrations
from iat.db.models import Asset, Project
from iat.db.schema import AddColumn, Column, DataStep, Table, integer, text, uuid_pk
from iat.db.store import Store
from iat.errors import IATError, NotFound
from iat.events import EventBus
from iat.logs import Redactor
from iat.registry import Params, Result, command, load_commands
from iat.settings import Settings

from support import Client

WAIT_S = 10.0  # generous bounds for "this must happen", never a speed target


# --- Store ---


def test_a_read_inside_a_read_or_a_write_joins_it(app: App, project: dict):
    store = app.projects.open("alpha").store

    def name_of() -> str:
        return Project.get_by_id(project["id"]).name

    def outer_read() -> tuple[str, str]:
        first = name_of()
        inner = store.read(name_of)  # used to close the connection under the outer transaction
        return first, Project.get_by_id(project["id"]).name + "|" + inner

    assert store.read(outer_read) == ("Alpha", "Alpha|Alpha")

    def write_then_read() -> str:
        Project.update(name="Renamed").where(Project.id == project["id"]).execute()
        return store.read(name_of)  # inside the write: sees the uncommitted change

    assert store.write(write_then_read) == "Renamed"
    assert store.read(name_of) == "Renamed"


def test_close_waits_for_a_call_in_flight_then_refuses_with_the_stores_error(tmp_path: Path):
    store = Store.open_sqlite(tmp_path / "p" / "project.db", "project")
    store.closed_error = lambda: NotFound("project 'p' was deleted or closed")
    inside, release, finished = threading.Event(), threading.Event(), []

    def slow_read() -> int:
        inside.set()
        release.wait(WAIT_S)
        return Asset.select().count()  # needs its connection after close() was asked for

    reader = threading.Thread(target=lambda: finished.append(store.read(slow_read)))
    reader.start()
    assert inside.wait(WAIT_S)
    closer = threading.Thread(target=store.close)
    closer.start()
    deadline = time.monotonic() + WAIT_S
    while not store.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(NotFound, match="deleted or closed"):  # new calls are refused at once ...
        store.read(lambda: 1)
    assert closer.is_alive()  # ... while close() waits for the read in flight
    release.set()
    reader.join(WAIT_S)
    closer.join(WAIT_S)
    assert finished == [0] and not closer.is_alive()


def test_deleting_a_project_under_readers_gives_them_typed_errors_and_loses_nothing(app: App, client: Client):
    client.call("projects.create", slug="busy", name="Busy")
    client.call("projects.update", slug="busy", description="kept in the trash")
    errors: list[IATError] = []
    unexpected: list[BaseException] = []
    stop = threading.Event()
    calls = [("projects.get", {"slug": "busy"}), ("assets.list", {"slug": "busy"}),
             ("storage.get", {"slug": "busy"}), ("audit.list", {"slug": "busy"})]

    def reader(i: int) -> None:
        while not stop.is_set():
            method, params = calls[i % len(calls)]
            try:
                client.call(method, **params)
            except IATError as exc:
                errors.append(exc)
            except BaseException as exc:  # noqa: BLE001 - what the test looks for
                unexpected.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # let the readers get going on the open project
    deleted = client.call("projects.delete", slug="busy", confirm=True)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(WAIT_S)
    assert unexpected == []
    assert errors and {e.name for e in errors} == {"not_found"}, {e.name for e in errors}
    trashed = Store.open_sqlite(Path(deleted["trash_dir"]) / "project.db", "project")
    try:
        row = trashed.read(lambda: Project.select().dicts().get())
        assert row["status"] == "deleted" and row["description"] == "kept in the trash"
    finally:
        trashed.close()


def test_a_project_that_is_slow_to_open_does_not_stall_the_others(app: App, client: Client):
    client.call("projects.create", slug="slow", name="Slow")
    client.call("projects.create", slug="quick", name="Quick")
    slow_db = Path(client.call("projects.get", slug="slow")["root_dir"]) / "project.db"
    app.projects.close("slow")
    app.projects.close("quick")
    # Another process holds the slow project's database exclusively: opening it waits on SQLite's busy timeout.
    holder = sqlite3.connect(slow_db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    outcome: list = []
    opener = threading.Thread(target=lambda: outcome.append(_try(lambda: client.call("projects.get", slug="slow"))))
    opener.start()
    try:
        time.sleep(0.3)
        assert opener.is_alive(), "the slow project opened despite the lock: the test proves nothing"
        assert client.call("projects.get", slug="quick")["slug"] == "quick"
        assert client.call("projects.create", slug="third", name="Third")["slug"] == "third"
        assert opener.is_alive()  # the other project's calls finished while this open still waits
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    opener.join(30)
    assert outcome and outcome[0]["slug"] == "slow"


def _try(fn):
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001
        return exc


# --- events ---


def test_publish_never_waits_for_a_subscriber_and_delivers_name_and_payload():
    bus = EventBus()
    release = threading.Event()
    got: list[tuple[str, dict]] = []

    def stuck(name: str, payload: dict) -> None:
        release.wait(WAIT_S)

    bus.subscribe(stuck)
    bus.subscribe(lambda name, payload: got.append((name, payload)))
    publisher = threading.Thread(target=lambda: [bus.publish("thing.made", {"n": i}) for i in range(100)])
    publisher.start()
    publisher.join(WAIT_S)
    assert not publisher.is_alive()  # done although the first subscriber has not returned once
    release.set()
    assert bus.drain(WAIT_S)
    assert got == [("thing.made", {"n": i}) for i in range(100)]
    bus.close()


def test_a_failing_subscriber_does_not_stop_the_others(caplog):
    bus = EventBus()
    got = []
    bus.subscribe(lambda name, payload: 1 / 0)
    bus.subscribe(lambda name, payload: got.append(name))
    with caplog.at_level(logging.WARNING, logger="iat.events"):
        bus.publish("a", {})
        assert bus.drain(WAIT_S)
    assert got == ["a"] and "subscriber failed" in caplog.text
    bus.close()


# --- one App, its own registry and redactor ---


class _EchoParams(Params):
    text: str


class _EchoOut(Result):
    text: str


def test_each_app_owns_its_registry_and_redactor(tmp_path: Path):
    first = App(Settings.from_env({}, home=tmp_path / "a"))
    second = App(Settings.from_env({}, home=tmp_path / "b"))
    try:
        assert first.registry is not second.registry
        command("test.echo_seam", params=_EchoParams, result=_EchoOut)(lambda ctx, p: _EchoOut(text=p.text))
        first.registry = load_commands(("iat.commands.system", __name__))
        assert Client(first).call("test.echo_seam", text="hi") == {"text": "hi"}
        assert Client(second).error("test.echo_seam", text="hi").name == "method_not_found"
        assert first.redactor is not second.redactor
        assert first.redactor.scrub(f"token {first.token}") == "token [redacted]"
        assert first.token in second.redactor.scrub(f"token {first.token}")
    finally:
        first.close()
        second.close()


def test_redactor_masks_secrets_in_messages_and_tracebacks():
    redactor = Redactor()
    redactor.add("sk-live-123456")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s", ("sk-live-123456",), None)
    try:
        raise ValueError("bad key sk-live-123456")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert redactor.filter(record)
    assert "sk-live" not in record.msg and "sk-live" not in record.exc_text


# --- migration language: add a column, change rows (both engines) ---

_THINGS = Table("things", (uuid_pk(), text("name")))


def _migrate_things(database, dialect: str) -> list[tuple]:
    ops = [
        _THINGS,
        DataStep("seed", sql={d: ("INSERT INTO things (id, name) VALUES "
                                  "('00000000-0000-4000-8000-000000000001', 'one'), "
                                  "('00000000-0000-4000-8000-000000000002', 'two')",) for d in ("sqlite", "postgres")}),
        AddColumn("things", integer("rank", default=0)),
        AddColumn("things", text("label", nullable=True)),
        DataStep("rank by name", fn=lambda db, d: db.execute_sql("UPDATE things SET rank = 2 WHERE name = 'two'")),
        DataStep("label", sql={"sqlite": ("UPDATE things SET label = 'L-' || name",),
                               "postgres": ("UPDATE things SET label = concat('L-', name)",)}),
    ]
    with database.atomic():
        for op in ops:
            migrations.run_operation(database, op, dialect)
    return list(database.execute_sql("SELECT name, rank, label FROM things ORDER BY name"))


def test_add_column_and_data_steps_on_sqlite(tmp_path: Path):
    database = peewee.SqliteDatabase(str(tmp_path / "t.db"))
    with database.connection_context():
        assert _migrate_things(database, "sqlite") == [("one", 0, "L-one"), ("two", 2, "L-two")]
        with pytest.raises(peewee.IntegrityError):  # the added column keeps the schema's CHECKs
            database.execute_sql("INSERT INTO things (id, name, rank) VALUES ('bad', 'x', 1)")


@pytest.mark.postgres
def test_add_column_and_data_steps_on_postgres(pg_database: str):
    from urllib.parse import urlparse

    url = urlparse(pg_database)
    database = peewee.PostgresqlDatabase(url.path.lstrip("/"), host=url.hostname, port=url.port, user=url.username)
    with database.connection_context():
        assert _migrate_things(database, "postgres") == [("one", 0, "L-one"), ("two", 2, "L-two")]


def test_the_migration_language_refuses_what_alter_table_cannot_do():
    with pytest.raises(ValueError, match="needs a default"):
        AddColumn("things", integer("count"))
    with pytest.raises(ValueError, match="primary key or unique"):
        AddColumn("things", Column("code", "text", unique=True, nullable=True))
    with pytest.raises(ValueError, match="must be nullable"):
        AddColumn("things", Column("owner", "uuid", references="app_users", default="x"))
    with pytest.raises(ValueError, match="each dialect"):
        DataStep("half", sql={"sqlite": ("SELECT 1",)})
    with pytest.raises(ValueError, match="exactly one"):
        DataStep("none")


def test_folded_schema_has_the_added_columns():
    schema = migrations.Schema()
    for op in (_THINGS, AddColumn("things", integer("rank", default=0))):
        migrations._fold(schema, op)
    assert [c.name for c in schema.tables["things"].columns] == ["id", "name", "rank"]
