"""transfer.rows: which tables hold a project's rows (in foreign-key order), counting them, and copying them between
stores in one write on the destination and one read snapshot of the source, also while the source is written."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.migrations import build_schema
from iat.db.models import Asset
from iat.db.store import Store
from iat.errors import Conflict
from iat.transfer import rows

from support import Client


def test_tables_come_after_every_table_they_refer_to():
    schema = build_schema("project")
    names = [m._meta.table_name for m in rows.tables()]
    assert len(names) == len(set(names))
    for i, name in enumerate(names):
        for column in schema.tables[name].columns:
            if column.references and column.references != name:
                assert column.references in names[:i], f"{name}.{column.name} refers to a later table"
    # Everything but a database's own bookkeeping is project data.
    assert set(names) == set(schema.tables) - {"schema_migrations", "run_job_claims"}
    assert "project_api_secrets" in names
    assert "project_api_secrets" not in [m._meta.table_name for m in rows.tables(include_secrets=False)]


@pytest.fixture
def source(client: Client, project: dict):
    client.call("characters.create", slug="alpha", code="mira", name="Mira", identity_constraints_json={})
    client.call("style_guides.create", slug="alpha", name="House", rules_json={})
    return client.app.projects.open("alpha")


def _add_assets(project_id: str, n: int, tag: str) -> None:
    """n assets, each with an audit row naming it, in the caller's transaction."""
    for _ in range(n):
        asset_id = str(uuid.uuid4())
        Asset.insert(id=asset_id, project_id=project_id, kind="other", storage_uri=f"assets/{asset_id}.bin",
                     storage_backend="local", metadata_json={}, created_at=utcnow()).execute()
        audit.record(project_id, None, tag, {"asset_id": asset_id})


def test_copy_gives_the_same_rows_and_rewrites(source, tmp_path: Path):
    source.store.write(_add_assets, source.id, 7, "test.pair")
    dst = Store.open_sqlite(tmp_path / "copy.db", "project")
    try:
        written = rows.copy(source.store, dst, rewrite={"characters": lambda r: None,
                                                        "projects": lambda r: {**r, "name": "Renamed"}})
        want = source.store.read(rows.counts)
        assert written == {**want, "characters": 0}
        assert dst.read(rows.counts) == written
        assert dst.read(lambda: rows.tables()[1].select().dicts().first())["name"] == "Renamed"
    finally:
        dst.close()


def test_a_failing_copy_leaves_the_destination_empty(source, tmp_path: Path):
    dst = Store.open_sqlite(tmp_path / "copy.db", "project")

    def boom(row: dict) -> dict:
        raise RuntimeError("planted")

    try:
        with pytest.raises(RuntimeError, match="planted"):
            rows.copy(source.store, dst, rewrite={"audit_events": boom})
        assert set(dst.read(rows.counts).values()) == {0}
        with pytest.raises(Conflict):  # a non-empty destination refuses a second copy of the same rows
            rows.copy(source.store, dst)
            rows.copy(source.store, dst)
    finally:
        dst.close()


def test_copy_reads_one_state_of_a_source_written_meanwhile(source, tmp_path: Path, monkeypatch):
    """A writer adds (asset, audit row) pairs in one transaction each while the copy pages through the tables
    (a few rows a page, so it takes many reads): the copy holds as many of the writer's assets as audit rows."""
    monkeypatch.setattr(rows, "BATCH", 3)
    source.store.write(_add_assets, source.id, 30, "test.pair")
    stop = threading.Event()
    added = []

    def writer() -> None:
        while not stop.is_set():
            source.store.write(_add_assets, source.id, 1, "test.pair")
            added.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    dst = Store.open_sqlite(tmp_path / "copy.db", "project")
    try:
        while len(added) < 3:  # the writer is going
            stop.wait(0.01)
        rows.copy(source.store, dst)
    finally:
        stop.set()
        thread.join()
    try:
        def pairs() -> tuple[int, int]:
            from iat.db.models import AuditEvent
            return (Asset.select().count(),
                    AuditEvent.select().where(AuditEvent.event_code == "test.pair").count())

        assets, audits = dst.read(pairs)
        assert assets == audits and assets >= 33
        assert source.store.read(pairs)[0] > 30
    finally:
        dst.close()
