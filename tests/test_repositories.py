"""The repository functions on both engines: a project's SQLite file and a real PostgreSQL server, with the same
code and the same results (so a studio can later share one PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from iat.assets import repo as assets
from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.models import Asset
from iat.db.store import Store
from iat.errors import Conflict, NotFound
from iat.projects import repo as projects


def _owner() -> dict:
    now = utcnow()
    return {"id": str(uuid.uuid4()), "username": "local", "display_name": "Local", "email": None, "is_active": True,
            "created_at": now, "updated_at": now}


def _create(engine_store: Store, owner: dict, slug: str) -> dict:
    pid = str(uuid.uuid4())
    return engine_store.write(projects.create_project, owner,
                       {"id": pid, "slug": slug, "name": slug.title(), "description": "", "settings_json": {"k": [1]}},
                       {"local_base_dir": "/p", "local_project_root": f"/p/{slug}"}, utcnow())


def test_project_rows_round_trip(engine_store: Store):
    owner = _owner()
    row = _create(engine_store, owner, "alpha")
    assert row["settings_json"] == {"k": [1]} and row["status"] == "active"
    assert row["created_at"].tzinfo is not None
    changed = engine_store.write(projects.update_project, row["id"], {"name": "A2", "status": "archived"}, owner["id"],
                          "project.updated", utcnow())
    assert (changed["name"], changed["status"]) == ("A2", "archived")
    storage = engine_store.write(projects.update_storage, row["id"], {"s3_enabled": True, "s3_bucket": "b-1"},
                                 owner["id"], utcnow())
    assert storage["s3_enabled"] is True and storage["s3_bucket"] == "b-1"
    events, cursor = engine_store.read(audit.list_events, row["id"], 10, None)
    assert [e["event_code"] for e in events] == ["storage.updated", "project.updated", "project.created"]
    assert cursor is None


def test_constraints_become_typed_errors_and_roll_back(engine_store: Store):
    owner = _owner()
    first = _create(engine_store, owner, "alpha")
    with pytest.raises(Conflict):
        _create(engine_store, owner, "alpha")
    with pytest.raises(Conflict):  # an enumeration CHECK, caught by the database itself
        engine_store.write(projects.update_project, first["id"], {"status": "bogus"}, owner["id"], "x", utcnow())
    assert engine_store.read(projects.get_project, first["id"])["status"] == "active"
    events, _ = engine_store.read(audit.list_events, first["id"], 10, None)
    assert [e["event_code"] for e in events] == ["project.created"]  # the failed writes left no audit row
    with pytest.raises(NotFound):
        engine_store.read(projects.get_project, str(uuid.uuid4()))


def test_queries_are_scoped_to_one_project(engine_store: Store):
    owner = _owner()
    a, b = _create(engine_store, owner, "alpha"), _create(engine_store, owner, "beta")
    base = utcnow()

    def add_assets() -> None:
        rows = [{"id": str(uuid.uuid4()), "project_id": pid, "kind": "generated" if i % 2 else "input",
                 "storage_uri": f"assets/{i}.png", "storage_backend": "local", "created_at": base + timedelta(seconds=i)}
                for pid in (a["id"], b["id"]) for i in range(25)]
        Asset.insert_many(rows).execute()

    engine_store.write(add_assets)
    seen, cursor = [], None
    while True:
        page, cursor = engine_store.read(assets.list_assets, a["id"], None, 10, cursor)
        seen += page
        if cursor is None:
            break
    assert len(seen) == 25 and {r["project_id"] for r in seen} == {a["id"]}
    assert [r["created_at"] for r in seen] == sorted((r["created_at"] for r in seen), reverse=True)
    generated, _ = engine_store.read(assets.list_assets, a["id"], "generated", 100, None)
    assert len(generated) == 12 and {r["kind"] for r in generated} == {"generated"}
    b_asset = engine_store.read(assets.list_assets, b["id"], None, 1, None)[0][0]["id"]
    with pytest.raises(NotFound):  # b's asset is not visible through a
        engine_store.read(assets.get_asset, a["id"], b_asset)
