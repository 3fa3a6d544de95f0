"""Concurrent writes for real: many writers and readers on one database at once, then an exact reckoning.

In process, 8 writer threads each run a few hundred mixed mutations (projects and assets created, updated and
deleted, a shared counter read-modified-written, slugs raced for, transactions that fail half-way) through
`Store.write` on a real SQLite file and on the real PostgreSQL server, while reader threads read. Each writer
keeps a ledger of what was acknowledged to it; afterwards the database must hold exactly that, with one audit row
per acknowledged mutation, and no thread may have seen anything but the errors it provoked on purpose.

Against the real process, 50 clients over stdio, TCP and HTTP (JSON-RPC and REST) create, update, archive and
delete projects at once; the project list and the audit trails must be exactly what the replies acknowledged.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field

import peewee
import pytest

from iat.assets import repo as assets_repo
from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.models import Asset, AuditEvent, Project, ProjectStorage
from iat.db.store import Store
from iat.errors import Conflict, NotFound
from iat.projects import repo as projects_repo

from concurrent_clients import HttpPeer, Outcome, Sidecar, TcpPeer

WRITERS = 8
READERS = 3
OPS_PER_WRITER = 250
RACE_EVERY = 25  # every 25th op of each writer races the others for the same new slug
COUNTER_EVENT = "counter.incremented"


class Doomed(Exception):
    """Raised on purpose inside a write after it changed rows: the whole transaction must vanish."""


# --- mutations: run inside Store.write, each with its audit row in the same transaction (like iat/*/repo.py) ---


def update_project(project_id: str, changes: dict, actor_id: str, op: str) -> dict:
    projects_repo.get_project(project_id)
    Project.update(**changes, updated_at=utcnow()).where(Project.id == project_id).execute()
    audit.record(project_id, actor_id, "project.updated", {"op": op, "changed": sorted(changes)})
    return projects_repo.get_project(project_id)


def delete_project(project_id: str, actor_id: str, op: str) -> None:
    """Deletes the row; its storage policy and assets go with it (ON DELETE CASCADE), its audit rows stay with
    project_id set to NULL, this one included."""
    audit.record(project_id, actor_id, "project.deleted", {"op": op})
    if Project.delete().where(Project.id == project_id).execute() != 1:
        raise NotFound(f"project {project_id} not found")


def create_asset(row: dict, actor_id: str, op: str, doomed: bool = False) -> dict:
    Asset.insert(**row, storage_backend="local", created_at=utcnow()).execute()
    audit.record(row["project_id"], actor_id, "asset.created", {"op": op, "asset_id": row["id"]})
    if doomed:
        raise Doomed(op)
    return assets_repo.get_asset(row["project_id"], row["id"])


def update_asset(project_id: str, asset_id: str, changes: dict, actor_id: str, op: str) -> dict:
    if Asset.update(**changes).where((Asset.project_id == project_id) & (Asset.id == asset_id)).execute() != 1:
        raise NotFound(f"asset {asset_id} not found")
    audit.record(project_id, actor_id, "asset.updated", {"op": op, "asset_id": asset_id})
    return assets_repo.get_asset(project_id, asset_id)


def delete_asset(project_id: str, asset_id: str, actor_id: str, op: str) -> None:
    if Asset.delete().where((Asset.project_id == project_id) & (Asset.id == asset_id)).execute() != 1:
        raise NotFound(f"asset {asset_id} not found")
    audit.record(project_id, actor_id, "asset.deleted", {"op": op, "asset_id": asset_id})


def increment(project_id: str, counter_id: str, actor_id: str, op: str) -> int:
    """Read, then write what was read plus one: only a serialised writer never loses one of these."""
    value = Asset.get_by_id(counter_id).width
    Asset.update(width=value + 1).where(Asset.id == counter_id).execute()
    audit.record(project_id, actor_id, COUNTER_EVENT, {"op": op})
    return value + 1


def counter_and_its_audit_rows(counter_id: str) -> tuple[int, int]:
    """Both in ONE statement, so one snapshot on either engine (PostgreSQL's READ COMMITTED gives each statement
    its own): the counter and its audit rows are written in one transaction, so they must always agree."""
    rows = (AuditEvent.select(peewee.fn.COUNT(AuditEvent.id)).where(AuditEvent.event_code == COUNTER_EVENT))
    value, count = Asset.select(Asset.width, rows.alias("n")).where(Asset.id == counter_id).tuples().get()
    return value, count


def audit_key(row: dict) -> str:
    """Which acknowledged mutation an audit row records: its op id, or for repo.create_project its slug."""
    payload = row["payload_json"]
    return payload["op"] if "op" in payload else f"created:{payload['slug']}"


# --- the workload ---


@dataclass
class Ledger:
    """What one writer was told: acknowledged state and audit keys, and what must be absent."""

    projects: dict[str, dict] = field(default_factory=dict)  # id -> slug, name, status
    assets: dict[str, dict] = field(default_factory=dict)  # id -> project_id, kind, storage_uri, width
    acked: list[str] = field(default_factory=list)  # audit keys, one per acknowledged mutation
    absent_assets: set[str] = field(default_factory=set)  # doomed, or deleted
    absent_ops: set[str] = field(default_factory=set)
    increments: int = 0
    race_won: list[str] = field(default_factory=list)
    race_lost: list[str] = field(default_factory=list)


@dataclass
class Shared:
    stores: list[Store]  # one, or two on the same file as two processes would have
    owner: dict
    shared_project: str
    counter_id: str
    start: threading.Barrier
    writers_done: threading.Event = field(default_factory=threading.Event)
    known_projects: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reads: Counter = field(default_factory=Counter)

    def fail(self, where: str) -> None:
        self.failures.append(f"{where} ({threading.current_thread().name}):\n{traceback.format_exc()}")


def owner_row() -> dict:
    now = utcnow()
    return {"id": str(uuid.uuid4()), "username": "local", "display_name": "Local", "email": None,
            "is_active": True, "created_at": now, "updated_at": now}


def new_project(store: Store, shared: Shared, slug: str) -> dict:
    return store.write(
        projects_repo.create_project, shared.owner,
        {"id": str(uuid.uuid4()), "slug": slug, "name": slug.upper(), "description": "", "settings_json": {}},
        {"local_base_dir": "/p", "local_project_root": f"/p/{slug}"}, utcnow())


def writer(shared: Shared, index: int, ledger: Ledger) -> None:
    rng = random.Random(index)
    store, actor = shared.stores[index % len(shared.stores)], shared.owner["id"]
    shared.start.wait()
    for n in range(OPS_PER_WRITER):
        op = f"w{index}-{n}"
        mine = list(ledger.projects)
        my_assets = list(ledger.assets)
        choice = rng.random()
        try:
            if n % RACE_EVERY == 0:  # every writer asks for the same slug: one wins, the others get conflict
                slug = f"race-{n // RACE_EVERY}"
                try:
                    row = new_project(store, shared, slug)
                except Conflict:
                    ledger.race_lost.append(slug)
                else:
                    ledger.race_won.append(slug)
                    ledger.acked.append(f"created:{slug}")
                    assert row["slug"] == slug and row["status"] == "active"
                continue
            if not mine or choice < 0.10:
                row = new_project(store, shared, f"w{index}-p{n}")
                ledger.projects[row["id"]] = {"slug": row["slug"], "name": row["name"], "status": "active"}
                ledger.acked.append(f"created:{row['slug']}")
                shared.known_projects.append(row["id"])
            elif choice < 0.22:
                pid = rng.choice(mine)
                changes = {"name": f"name-{op}", "status": rng.choice(["active", "archived"])}
                row = store.write(update_project, pid, changes, actor, op)
                assert (row["name"], row["status"]) == (changes["name"], changes["status"]), row
                ledger.projects[pid].update(changes)
                ledger.acked.append(op)
            elif choice < 0.27 and len(mine) > 1:
                pid = rng.choice(mine)
                store.write(delete_project, pid, actor, op)
                del ledger.projects[pid]
                for aid in [a for a, v in ledger.assets.items() if v["project_id"] == pid]:
                    del ledger.assets[aid]
                    ledger.absent_assets.add(aid)
                ledger.acked.append(op)
            elif choice < 0.55:
                row = {"id": str(uuid.uuid4()), "project_id": rng.choice(mine), "kind": "generated",
                       "storage_uri": f"assets/{op}.png", "width": n}
                doomed = rng.random() < 0.15
                try:
                    got = store.write(create_asset, row, actor, op, doomed)
                except Doomed:
                    assert doomed
                    ledger.absent_assets.add(row["id"])
                    ledger.absent_ops.add(op)
                    continue
                assert not doomed and got["storage_uri"] == row["storage_uri"], got
                ledger.assets[row["id"]] = {k: row[k] for k in ("project_id", "kind", "storage_uri", "width")}
                ledger.acked.append(op)
            elif choice < 0.70 and my_assets:
                aid = rng.choice(my_assets)
                changes = {"storage_uri": f"assets/{op}.webp", "width": n, "kind": rng.choice(["final", "mask"])}
                got = store.write(update_asset, ledger.assets[aid]["project_id"], aid, changes, actor, op)
                assert {k: got[k] for k in changes} == changes, got
                ledger.assets[aid].update(changes)
                ledger.acked.append(op)
            elif choice < 0.78 and my_assets:
                aid = rng.choice(my_assets)
                store.write(delete_asset, ledger.assets.pop(aid)["project_id"], aid, actor, op)
                ledger.absent_assets.add(aid)
                ledger.acked.append(op)
            else:
                store.write(increment, shared.shared_project, shared.counter_id, actor, op)
                ledger.increments += 1
                ledger.acked.append(op)
            if rng.random() < 0.2:  # an acknowledged write is committed: this thread reads it back at once
                check_ledger_visible(store, ledger, rng)
        except Exception:  # noqa: BLE001 - anything else is a failure, reported with its traceback
            shared.fail(f"writer op {op}")
            return


def check_ledger_visible(store: Store, ledger: Ledger, rng: random.Random) -> None:
    if ledger.assets:
        aid = rng.choice(list(ledger.assets))
        expected = ledger.assets[aid]
        row = store.read(assets_repo.get_asset, expected["project_id"], aid)
        assert {k: row[k] for k in expected} == expected, (row, expected)
    if ledger.projects:
        pid = rng.choice(list(ledger.projects))
        row = store.read(projects_repo.get_project, pid)
        assert {k: row[k] for k in ("slug", "name", "status")} == ledger.projects[pid], row


def reader(shared: Shared, index: int) -> None:
    rng = random.Random(-index)
    store = shared.stores[index % len(shared.stores)]
    last_counter = 0
    shared.start.wait()
    while not shared.writers_done.is_set():
        try:
            value, rows = store.read(counter_and_its_audit_rows, shared.counter_id)
            assert value == rows, f"counter {value} but {rows} audit rows for it in one snapshot"
            assert value >= last_counter, f"counter went back from {last_counter} to {value}"
            last_counter = value
            if shared.known_projects:
                pid = rng.choice(shared.known_projects)
                items, _ = store.read(assets_repo.list_assets, pid, None, 20, None)
                assert all(a["project_id"] == pid for a in items)
                store.read(audit.list_events, pid, 20, None)
                try:
                    store.read(projects_repo.get_project, pid)
                except NotFound:  # deleted meanwhile: the one error a reader may meet
                    shared.reads["not_found"] += 1
            shared.reads["ok"] += 1
        except Exception:  # noqa: BLE001
            shared.fail("reader")
            return
        time.sleep(0.005)  # pacing, not timing: a spinning reader would starve the writers of the GIL


def run_contention(*stores: Store) -> None:
    store = stores[0]
    owner = owner_row()
    base = store.write(projects_repo.create_project, owner,
                       {"id": str(uuid.uuid4()), "slug": "shared", "name": "Shared", "description": "",
                        "settings_json": {}}, {"local_base_dir": "/p", "local_project_root": "/p/shared"}, utcnow())
    counter = {"id": str(uuid.uuid4()), "project_id": base["id"], "kind": "other", "storage_uri": "counter",
               "width": 0}
    store.write(create_asset, counter, owner["id"], "counter")
    shared = Shared(list(stores), owner, base["id"], counter["id"], threading.Barrier(WRITERS + READERS))
    ledgers = [Ledger() for _ in range(WRITERS)]
    writers = [threading.Thread(target=writer, args=(shared, i, ledgers[i]), name=f"writer-{i}")
               for i in range(WRITERS)]
    readers = [threading.Thread(target=reader, args=(shared, i), name=f"reader-{i}") for i in range(READERS)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(300)
    shared.writers_done.set()
    for t in readers:
        t.join(60)
    assert not any(t.is_alive() for t in writers + readers), "a thread never finished"
    assert not shared.failures, "\n".join(shared.failures[:5])
    assert shared.reads["ok"] > 0, "the readers never got a read in while the writers ran"

    # --- the reckoning ---
    projects = {base["id"]: {"slug": "shared", "name": "Shared", "status": "active"}}
    assets = {counter["id"]: {k: counter[k] for k in ("project_id", "kind", "storage_uri")}}
    acked = Counter({"created:shared": 1, "counter": 1})
    for ledger in ledgers:
        projects.update(ledger.projects)
        assets.update(ledger.assets)
        acked.update(ledger.acked)
    races = Counter(s for ledger in ledgers for s in ledger.race_won)
    lost = Counter(s for ledger in ledgers for s in ledger.race_lost)
    assert races and all(n == 1 for n in races.values()), f"a raced slug was won more than once: {races}"
    assert {s: races[s] + lost[s] for s in races | lost} == {s: WRITERS for s in races | lost}
    assert set(lost) <= set(races), "a slug every writer lost was never created"

    def final_state():
        project_rows = {r["id"]: r for r in Project.select().dicts()}
        storage_rows = Counter(r["project_id"] for r in ProjectStorage.select().dicts())
        asset_rows = {r["id"]: r for r in Asset.select().dicts()}
        audit_rows = list(AuditEvent.select().dicts())
        return project_rows, storage_rows, asset_rows, audit_rows

    project_rows, storage_rows, asset_rows, audit_rows = store.read(final_state)
    race_rows = {r["slug"] for r in project_rows.values() if r["slug"].startswith("race-")}
    assert race_rows == set(races)
    got_projects = {pid: {k: r[k] for k in ("slug", "name", "status")} for pid, r in project_rows.items()
                    if not r["slug"].startswith("race-")}
    assert got_projects == projects
    assert storage_rows == Counter(list(project_rows))  # exactly one storage policy per remaining project
    got_assets = {aid: {k: r[k] for k in ("project_id", "kind", "storage_uri", "width")}
                  for aid, r in asset_rows.items() if aid != counter["id"]}
    assert got_assets == {aid: a for aid, a in assets.items() if aid != counter["id"]}
    increments = sum(ledger.increments for ledger in ledgers)
    assert asset_rows[counter["id"]]["width"] == increments, "lost updates: the writes were not serialised"
    assert not set(asset_rows) & set().union(*(ledger.absent_assets for ledger in ledgers))

    keys = Counter(audit_key(r) for r in audit_rows)
    doomed = set().union(*(ledger.absent_ops for ledger in ledgers))
    assert not doomed & set(keys), "a transaction that failed half-way left its audit row"
    duplicated = {k: n for k, n in keys.items() if n > 1}
    assert not duplicated, f"audit rows recorded more than once: {list(duplicated.items())[:5]}"
    assert keys == acked, (f"audit rows without an acknowledged mutation: {sorted(set(keys) - set(acked))[:5]}; "
                           f"acknowledged mutations without one: {sorted(set(acked) - set(keys))[:5]}")
    assert sum(keys.values()) > WRITERS * OPS_PER_WRITER * 0.9


@pytest.mark.parametrize("stores", [1, 2], ids=["one-store", "two-stores-one-file"])
def test_writers_and_readers_at_once_on_sqlite(tmp_path, stores):
    """With two stores, each with its own writer thread, the file sees two writers at once, as with a second
    sidecar on the same data home: SQLite's own lock, taken up front (BEGIN IMMEDIATE), must serialise them."""
    opened = [Store.open_sqlite(tmp_path / "project.db", "project") for _ in range(stores)]
    try:
        run_contention(*opened)
    finally:
        for store in opened:
            store.close()
    # Closed cleanly: the WAL was folded back and the file passes SQLite's own check.
    db = sqlite3.connect(tmp_path / "project.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()


@pytest.mark.postgres
def test_writers_and_readers_at_once_on_postgres(pg_database):
    store = Store.open_postgres(pg_database, "project")
    try:
        run_contention(store)
    finally:
        store.close()


# --- the real process: 50 clients over stdio, TCP and HTTP at once ---

CLIENTS = 50
RACED_SLUGS = 10  # race-0 .. race-9, each created by 5 clients at once: one wins, four get conflict
FATAL_MARKS = ("database is locked", "internal_error", "Traceback")
RENAME_ROUNDS = 200


@dataclass
class Ack:
    """One answered call of the process test, with the client that made it and its place in that client's run."""

    client: int
    step: int
    outcome: Outcome


def rest_call(peer: HttpPeer, method: str, params: dict) -> Outcome:
    """The same call over the REST route the registry generates for it."""
    slug = params.get("slug")
    if method == "projects.create":
        return peer.rest(method, params, "POST", "/api/projects", body=params)
    if method == "projects.update":
        return peer.rest(method, params, "PATCH", f"/api/projects/{slug}",
                         body={k: v for k, v in params.items() if k != "slug"})
    if method in ("projects.archive", "projects.unarchive"):
        return peer.rest(method, params, "POST", f"/api/projects/{slug}/{method.split('.')[1]}")
    if method == "projects.delete":
        return peer.rest(method, params, "DELETE", f"/api/projects/{slug}", query="confirm=true")
    if method == "projects.get":
        return peer.rest(method, params, "GET", f"/api/projects/{slug}")
    if method == "storage.get":
        return peer.rest(method, params, "GET", f"/api/projects/{slug}/storage")
    raise AssertionError(f"no REST mapping for {method}")


def client_script(i: int) -> list[tuple[str, dict]]:
    """What client i does, in order. Every third client's own project is also deleted by the next client, racing
    the owner's own updates, reads and deletion; the raced slugs are created and renamed by five clients each."""
    own, race = f"own-{i}", f"race-{i % RACED_SLUGS}"
    steps: list[tuple[str, dict]] = [
        ("projects.create", {"slug": own, "name": f"{own}-v0"}),
        ("projects.create", {"slug": race, "name": f"{race}-by-{i}"}),
        ("projects.update", {"slug": own, "name": f"{own}-v1", "description": f"client {i}"}),
        ("projects.update", {"slug": race, "name": f"{race}-renamed-by-{i}"}),
        ("projects.get", {"slug": own}),
    ]
    if i % 4 == 1:
        steps.append(("projects.archive", {"slug": own}))
        if i % 8 == 5:
            steps.append(("projects.unarchive", {"slug": own}))
    steps.append(("projects.update", {"slug": own, "name": f"{own}-v2"}))
    victim = (i - 1) % CLIENTS
    if victim % 3 == 0:  # the previous client's project: read it, then race its owner to delete it
        steps += [("projects.get", {"slug": f"own-{victim}"}), ("storage.get", {"slug": f"own-{victim}"}),
                  ("projects.delete", {"slug": f"own-{victim}", "confirm": True})]
    if i % 3 == 0:
        steps.append(("projects.delete", {"slug": own, "confirm": True}))
    return steps


def deletable(slug: str) -> bool:
    return slug.startswith("own-") and int(slug[4:]) % 3 == 0


def check_outcome(i: int, out: Outcome) -> None:
    """Each reply on its own: a result that says what was asked, or one of the errors this race may provoke."""
    text = repr(out)
    assert not any(mark in text for mark in FATAL_MARKS), f"client {i}: {out}"
    slug = out.params["slug"]
    if not out.ok:
        racing_create = out.method == "projects.create" and slug.startswith("race-")
        expected = "conflict" if racing_create else "not_found"
        assert out.error_name == expected and (racing_create or deletable(slug)), f"client {i}: {out}"
        return
    result = out.result
    if out.method == "projects.delete":
        assert result["slug"] == slug and result["trash_dir"], out
    elif out.method == "storage.get":
        assert result["local_project_root"].endswith(f"/projects/{slug}"), out
    else:
        assert result["slug"] == slug and result["status"] in ("active", "archived", "deleted"), out
        assert result["status"] != "deleted" or deletable(slug), out  # only a racing delete can mark it so
        if out.method in ("projects.create", "projects.update") and "name" in out.params:
            assert result["name"] == out.params["name"], out
        if out.method == "projects.archive":
            assert result["status"] in ("archived", "deleted"), out


def expected_state(acks: list[Ack]) -> tuple[dict, dict, Counter, dict]:
    """From the acknowledged replies alone: the projects that must exist (slug -> acceptable names and the final
    status), the audit events each project's database must hold, the deletions app.db must record, and where
    each deleted project's folder went."""
    events: dict[str, Counter] = {}
    final: dict[str, dict] = {}
    deleted: dict[str, str] = {}
    codes = {"projects.create": "project.created", "projects.update": "project.updated",
             "projects.archive": "project.archived", "projects.unarchive": "project.unarchived",
             "projects.delete": "project.deleted"}
    for ack in sorted(acks, key=lambda a: (a.client, a.step)):  # each client's own order
        out = ack.outcome
        if not out.ok or out.method not in codes:
            continue
        slug = out.params["slug"]
        events.setdefault(slug, Counter())[codes[out.method]] += 1
        state = final.setdefault(slug, {"names": set(), "name": None, "status": "active"})
        if out.method == "projects.delete":
            assert slug not in deleted, f"{slug} was deleted twice"
            deleted[slug] = out.result["trash_dir"]
        elif "name" in out.params:
            state["names"].add(out.params["name"])
            if slug.startswith("own-"):  # renamed only by its owner, in that client's order
                state["name"] = out.params["name"]
        if out.method in ("projects.archive", "projects.unarchive"):
            state["status"] = "archived" if out.method == "projects.archive" else "active"
    alive = {slug: state for slug, state in final.items() if slug not in deleted}
    return alive, events, Counter(list(deleted)), deleted


def all_pages(call, method: str, params: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        out = call(method, {**params, "limit": 500, **({"cursor": cursor} if cursor else {})})
        assert out.ok, out
        items += out.result["items"]
        cursor = out.result["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.process
def test_fifty_clients_over_three_transports_at_once(tmp_path):
    home = tmp_path / "home"
    sidecar = Sidecar(home, ["--stdio", "--tcp", "0", "--http", "0"])
    tcp_peers: list[TcpPeer] = []
    try:
        ready = sidecar.ready["params"]
        assert sidecar.ready["method"] == "sidecar.ready" and ready["pid"] == sidecar.proc.pid
        token, tcp, http_ = ready["token"], ready["tcp"], ready["http"]
        callers = []
        for i in range(CLIENTS):
            kind = ("stdio", "tcp", "rpc", "rest")[i % 4]
            if kind == "stdio":  # one pipe, many concurrent ids
                callers.append(sidecar.stdio.call)
            elif kind == "tcp":
                tcp_peers.append(TcpPeer(tcp["host"], tcp["port"], token))
                callers.append(tcp_peers[-1].call)
            else:
                peer = HttpPeer(http_["host"], http_["port"], token)
                callers.append(peer.call if kind == "rpc" else
                               (lambda m, p, peer=peer: rest_call(peer, m, p)))

        acks: list[Ack] = []
        failures: list[str] = []
        start = threading.Barrier(CLIENTS)

        def run(i: int) -> None:
            start.wait()
            for step, (method, params) in enumerate(client_script(i)):
                try:
                    out = callers[i](method, params)
                    acks.append(Ack(i, step, out))
                    check_outcome(i, out)
                except Exception:  # noqa: BLE001 - a failed check or a transport error, reported below
                    failures.append(f"client {i} step {step} {method}:\n{traceback.format_exc()}")
                    return

        threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}") for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a client never finished"
        assert not failures, "\n".join(failures[:5])
        assert len(acks) == sum(len(client_script(i)) for i in range(CLIENTS))
        for mux in [sidecar.stdio, *tcp_peers]:
            assert not mux.strays, f"{mux.via}: replies nobody asked for: {mux.strays[:5]}"

        alive, events, deletions, trash = expected_state(acks)
        wins = Counter(a.outcome.params["slug"] for a in acks
                       if a.outcome.method == "projects.create" and a.outcome.ok and a.step == 1)
        assert wins == Counter({f"race-{k}": 1 for k in range(RACED_SLUGS)}), wins
        assert set(deletions) == {f"own-{i}" for i in range(0, CLIENTS, 3)}  # each exactly once (checked above)

        # The list is exactly the projects that were acknowledged and not deleted, with their last name and status.
        call = sidecar.stdio.call
        listed = {p["slug"]: p for p in call("projects.list").result["items"]}
        assert set(listed) == set(alive)
        for slug, state in alive.items():
            got = call("projects.get", {"slug": slug}).result
            assert (listed[slug]["name"], listed[slug]["status"]) == (got["name"], got["status"]), \
                f"the index disagrees with {slug}'s own database: {listed[slug]} vs {got}"
            assert got["status"] == state["status"], (slug, got)
            if state["name"] is not None:
                assert got["name"] == state["name"], (slug, got)
            assert got["name"] in state["names"], (slug, got)
            trail = Counter(e["event_code"] for e in all_pages(call, "audit.list", {"slug": slug}))
            assert trail == events[slug], f"{slug}: audit {trail} for acknowledged {events[slug]}"
        app_trail = all_pages(call, "audit.list", {})
        assert Counter(e["event_code"] for e in app_trail) == Counter({"project.deleted": sum(deletions.values())})
        assert Counter(e["payload_json"]["slug"] for e in app_trail) == deletions

        for peer in tcp_peers:
            peer.close()
        code, _ = sidecar.stop_by_eof()  # fails past 2 s
        assert code == 0, sidecar.stderr_text()[-3000:]
        logs = sidecar.stderr_text() + sidecar.log_text()
        assert "database is locked" not in logs and "unexpected error" not in logs, logs[-3000:]

        # A deleted project's own database went to the trash whole: its trail is every acknowledged change.
        for slug, folder in trash.items():
            db = sqlite3.connect(f"file:{folder}/project.db?mode=ro", uri=True)
            try:
                trail = Counter(code for (code,) in db.execute("SELECT event_code FROM audit_events"))
                status = db.execute("SELECT status FROM projects WHERE slug = ?", (slug,)).fetchall()
            finally:
                db.close()
            assert trail == events[slug], f"{slug} (trash): audit {trail} for acknowledged {events[slug]}"
            assert status == [("deleted",)]
    finally:
        for peer in tcp_peers:
            peer.close()
        sidecar.kill()


def test_the_project_list_follows_renames_that_race(client):
    """projects.list reads the index in app.db, projects.get the project's own database. Renames racing each other
    must leave both saying the same: each round, 8 threads rename one project at once, then the two are compared."""
    client.call("projects.create", slug="raced", name="Raced")
    mismatches: list[tuple] = []
    failures: list[str] = []

    def compare() -> None:
        listed = {p["slug"]: p for p in client.call("projects.list")["items"]}["raced"]
        got = client.call("projects.get", slug="raced")
        if (listed["name"], listed["updated_at"]) != (got["name"], got["updated_at"]):
            mismatches.append((listed["name"], got["name"]))

    rounds = threading.Barrier(8, action=compare)

    def rename(i: int) -> None:
        try:
            for n in range(RENAME_ROUNDS):
                rounds.wait()
                assert client.call("projects.update", slug="raced", name=f"by-{i}-{n}")["name"] == f"by-{i}-{n}"
            rounds.wait()
        except Exception:  # noqa: BLE001
            failures.append(traceback.format_exc())
            rounds.abort()

    threads = [threading.Thread(target=rename, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[0]
    assert not mismatches, (f"{len(mismatches)} of {RENAME_ROUNDS} rounds ended with the index (list) behind the "
                            f"project (get), e.g. {mismatches[:3]}")
