"""Moving a SQLite project to the studio's PostgreSQL, through the export format.

    refuse: no studio configured or reachable, already a studio project, runs with work left
    -> the project closed (calls in flight finish; new ones wait on its lock until the move ends)
    -> exported as a package folder (transfer.export: a consistent snapshot, secrets included: they stay
       encrypted with this machine's key, which never leaves it), in <home>/tmp
    -> its folder set aside (renamed beside it) and its index entry taken out
    -> imported with its slug and id onto the studio (a slug the studio has already is found there, after the rows
       were copied: the import is undone) (transfer.import_: every hash checked, rows copied into a new
       schema, the files placed in a staging folder renamed to the project's folder, added to the catalog, indexed)
    -> committed: the old project.db (with its WAL and backups) goes to the trash; the set-aside copy of the files
       is removed (the import placed identical, hash-checked copies).

A failure at any step puts the folder and the index entry back as they were, and the import leaves no schema and
no catalog row on the server (ProjectDirectory.adopt drops them), so the project is still the SQLite project it
was. The way back (PostgreSQL to SQLite) is an export and an import.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.models import ProjectIndex
from iat.db.store import Store
from iat.errors import Conflict
from iat.projects.directory import DB_NAME, ProjectHandle
from iat.studio import catalog

if TYPE_CHECKING:
    from iat.app import App

log = logging.getLogger(__name__)


def _active_runs(store: Store, project_id: str) -> list[str]:
    from iat.pipeline import repo as runs

    return [r["id"] for r in store.read(runs.active_runs, project_id)]


def _busy(runs: list[str], slug: str) -> Conflict:
    return Conflict(f"project {slug!r} has runs with work left ({', '.join(runs[:5])}): cancel them or let them "
                    f"finish, then move it", details={"slug": slug, "run_ids": runs[:50]})


def move_to_studio(app: App, slug: str) -> tuple[ProjectHandle, dict]:
    """Moves the SQLite project `slug` onto the studio database, keeping its slug, id, folder, rows and files.
    Returns the new handle and what was moved (`rows`, `files`, `db_schema`, `old_database`: where the old
    project.db was kept)."""
    from iat.transfer.export import write_package
    from iat.transfer.import_ import import_package

    directory = app.projects
    url = directory._studio_url()
    catalog.list_all(url)  # unreachable is database_unavailable before anything is touched
    with directory._slug_lock(slug):  # other calls that open the project wait until the move ends
        handle = directory.open(slug)
        if handle.backend != "sqlite":
            raise Conflict(f"project {slug!r} is already on the studio database", details={"slug": slug})
        runs = _active_runs(handle.store, handle.id)
        if runs:
            raise _busy(runs, slug)
        entry = directory._entry(slug)
        root = Path(entry["root_dir"])
        with directory._lock:
            directory._open.pop(slug, None)
        if not handle.store.close():
            raise Conflict(f"project {slug!r} is busy (a long operation holds it): try again when it ends",
                           details={"slug": slug})

        tmp = app.settings.home / "tmp" / f"move-{uuid.uuid4().hex}"
        store = Store.open_sqlite(root / DB_NAME, "project")  # ours alone now: nobody else can open the project
        try:
            runs = _active_runs(store, handle.id)  # a run started between the check above and the close
            if runs:
                raise _busy(runs, slug)
            package = write_package(app, ProjectHandle(handle.id, slug, root, store), "folder", tmp,
                                    include_secrets=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            store.close()

        aside = root.parent / f".{root.name}.moving-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(root, aside)
            app.app_store.write(lambda: ProjectIndex.delete().where(ProjectIndex.id == handle.id).execute())
            try:
                moved, info = import_package(app, package["path"], slug=slug, backend="postgres",
                                             local_project_root=str(root))
            except BaseException:
                _restore(app, entry, root, aside)
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        owner = app.current_user()
        kept = _keep_old_database(app, aside, slug)
        try:
            moved.store.write(audit.record, moved.id, owner["id"], "project.moved", {
                "slug": slug, "backend": "postgres", "db_schema": catalog.schema_for(moved.id),
                "rows": info["rows"], "files": info["files"], "old_database": str(kept)})
        except Exception:  # noqa: BLE001 - the move committed; its audit row is what failed
            log.exception("project %s moved to the studio, but its project.moved audit row was not written", slug)
        return moved, {"rows": info["rows"], "files": info["files"], "db_schema": catalog.schema_for(moved.id),
                       "old_database": str(kept)}


def _restore(app: App, entry: dict, root: Path, aside: Path) -> None:
    """Puts the project back as it was: its folder and its index entry (the import left nothing behind)."""
    if root.exists():
        shutil.rmtree(root)
    os.replace(aside, root)
    fields = {k: v for k, v in entry.items() if k in ProjectIndex._meta.fields}
    app.app_store.write(lambda: ProjectIndex.insert(**fields).on_conflict_ignore().execute())


def _keep_old_database(app: App, aside: Path, slug: str) -> Path:
    """The old project.db (and its WAL, journals and migration backups) to the trash; the set-aside files go (the
    project's folder has hash-checked copies)."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    target = app.settings.trash_dir / f"{slug}-sqlite-{stamp}-{uuid.uuid4().hex[:6]}"
    target.mkdir(parents=True, exist_ok=True)
    stem = Path(DB_NAME).stem
    for path in aside.iterdir():  # project.db, -wal, -shm, and project.v<N>.<time>.bak of past migrations
        if path.is_file() and (path.name.startswith(DB_NAME) or (path.name.startswith(stem + ".v")
                                                                  and path.suffix == ".bak")):
            shutil.move(str(path), target / path.name)
    shutil.rmtree(aside, ignore_errors=True)
    return target / DB_NAME
