"""Where projects live: the index in app.db, one self-contained folder per project, its open database.

A project folder holds `project.db` (the full canonical schema with that project's rows) and `assets/`; copying
the folder copies the project. app.db only records which folders exist, so listing projects opens no project DB.

Opening, creating and deleting a project hold that project's own lock only: migrating one large project.db never
stalls calls to the others. A deleted project's store refuses later calls with not_found, and the deletion waits
for the calls and leases in flight on it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.models import AppUser, ProjectIndex
from iat.db.store import Store
from iat.errors import Conflict, NotFound
from iat.projects import repo
from iat.studio import catalog

if TYPE_CHECKING:
    from iat.app import App

log = logging.getLogger(__name__)

DB_NAME = "project.db"


def _join(user: dict) -> None:
    """Adds this workstation's user to a studio project's users, so its audit rows and runs can name it. Every
    workstation's user is called `local`: a name another workstation's user has is qualified with this host and
    the user's id."""
    if AppUser.select().where(AppUser.id == user["id"]).exists():
        return
    name = user["username"]
    if AppUser.select().where(AppUser.username == name).exists():
        name = f"{name}@{socket.gethostname()}-{user['id'][:8]}"
    AppUser.insert(**{**user, "username": name}).execute()


@dataclass(frozen=True)
class ProjectHandle:
    id: str
    slug: str
    root: Path
    store: Store
    backend: str = "sqlite"  # or "postgres": a studio project, shared with other workstations

    @property
    def files_dir(self) -> Path:
        return self.root / "assets"


class ProjectDirectory:
    def __init__(self, app: App):
        self.app = app
        self._open: dict[str, ProjectHandle] = {}
        self._lock = threading.Lock()  # guards the two dicts only, never held while a database opens
        self._slug_locks: dict[str, threading.RLock] = {}

    def _slug_lock(self, slug: str) -> threading.RLock:
        """Serialises opening, creating and deleting one slug; other slugs go on."""
        with self._lock:
            return self._slug_locks.setdefault(slug, threading.RLock())

    # --- the index ---

    def _find(self, slug: str) -> dict | None:
        owner = self.app.current_user()

        def find() -> dict | None:
            return (ProjectIndex.select()
                    .where((ProjectIndex.owner_user_id == owner["id"]) & (ProjectIndex.slug == slug))
                    .dicts().first())

        return self.app.app_store.read(find)

    def _entry(self, slug: str) -> dict:
        entry = self._find(slug)
        if entry is None:
            raise NotFound(f"project {slug!r} not found", details={"slug": slug})
        return entry

    def list(self, status: str | None) -> list[dict]:
        owner = self.app.current_user()

        def query() -> list[dict]:
            q = ProjectIndex.select().where(ProjectIndex.owner_user_id == owner["id"])
            if status is not None:
                q = q.where(ProjectIndex.status == status)
            return list(q.order_by(ProjectIndex.slug).dicts())

        return self.app.app_store.read(query)

    def update(self, slug: str, changes: dict, actor_id: str, event: str) -> tuple[ProjectHandle, dict]:
        """Changes a project's row and mirrors its name and status into the index. The two databases take two
        transactions, so both happen under the project's lock: concurrent changes reach the index in the order
        they were committed."""
        with self._slug_lock(slug):
            handle = self.open(slug)
            row = handle.store.write(repo.update_project, handle.id, changes, actor_id, event, utcnow())

            def mirror() -> None:
                ProjectIndex.update(name=row["name"], status=row["status"], updated_at=row["updated_at"]) \
                    .where(ProjectIndex.id == row["id"]).execute()

            self.app.app_store.write(mirror)
        return handle, row

    # --- opening ---

    def open(self, slug: str) -> ProjectHandle:
        with self._lock:
            handle = self._open.get(slug)
        if handle is not None:
            return handle
        with self._slug_lock(slug):
            with self._lock:
                handle = self._open.get(slug)
            if handle is not None:  # opened by another call while this one waited
                return handle
            entry = self._entry(slug)
            root = Path(entry["root_dir"])
            if entry["backend"] == "postgres":
                store = Store.open_postgres(self._studio_url(), "project", schema=entry["db_schema"])
                (root / "assets").mkdir(parents=True, exist_ok=True)  # this workstation's copy of the files
            else:
                db_path = root / DB_NAME
                if not db_path.is_file():
                    raise NotFound(f"project {slug!r} is indexed but its database is missing at {db_path}",
                                   details={"slug": slug, "root_dir": str(root)})
                store = Store.open_sqlite(db_path, "project")
            store.closed_error = lambda: NotFound(f"project {slug!r} was deleted or closed",
                                                  details={"slug": slug})
            try:
                store.read(repo.get_project, entry["id"])  # the folder must hold this very project
            except NotFound:
                store.close()
                raise Conflict(f"the folder {root} holds another project than {slug!r}",
                               details={"slug": slug, "root_dir": str(root)}) from None
            handle = ProjectHandle(entry["id"], slug, root, store, entry["backend"])
            with self._lock:
                self._open[slug] = handle
            bridge = self.app.studio_bridge if entry["backend"] == "postgres" else None
            if bridge is not None:  # its events reach the other workstations
                bridge.watch(entry["id"])
            return handle

    @contextmanager
    def lease(self, slug: str) -> Iterator[ProjectHandle]:
        """The open project, held open for a long operation: a deletion waits for it to end."""
        handle = self.open(slug)
        with handle.store.lease():
            yield handle

    def close(self, slug: str) -> None:
        with self._lock:
            handle = self._open.pop(slug, None)
        if handle is not None:
            handle.store.close()

    def close_all(self, timeout: float = 0.5) -> None:
        with self._lock:
            handles, self._open = list(self._open.values()), {}
        for handle in handles:
            handle.store.close(timeout)

    # --- creating and deleting ---

    def resolve_root(self, slug: str, local_project_root: str | None) -> Path:
        if local_project_root:
            root = Path(local_project_root).expanduser()
            return (root if root.is_absolute() else self.app.settings.home / root).resolve()
        return self.app.settings.projects_dir / slug

    def create(self, slug: str, name: str, description: str, settings: dict,
               local_project_root: str | None, *, backend: str = "sqlite") -> ProjectHandle:
        """A new, empty project (its row, storage policy and audit event)."""
        owner = self.app.current_user()
        project_id = str(uuid.uuid4())

        def fill(store: Store, staging: Path, root: Path) -> None:
            store.write(repo.create_project, owner,
                        {"id": project_id, "slug": slug, "name": name, "description": description,
                         "settings_json": settings},
                        {"local_base_dir": str(root.parent), "local_project_root": str(root)}, utcnow())

        return self.adopt(slug, project_id, fill, local_project_root=local_project_root, backend=backend)

    def adopt(self, slug: str, project_id: str, fill: Callable[[Store, Path, Path], None], *,
              local_project_root: str | None = None, backend: str = "sqlite") -> ProjectHandle:
        """Makes a project from what `fill(store, staging, root)` writes: its rows into `store` (a new database
        with the current schema and no rows) and its files into the folder `staging`, which becomes the project's
        folder `root`. The folder is built beside its final place and renamed into place, so a crash or a failing
        `fill` never leaves a half-made project; only then is it added to the index, with the name, status and
        times of the project row `fill` wrote (with this `project_id` and `slug`: an import rewrites the package's).

        `backend` "postgres" puts the rows in a new schema of the studio's shared database instead of project.db,
        and adds the project to the studio's catalog (where other workstations find it); the folder then holds
        this workstation's copy of the files."""
        owner = self.app.current_user()
        studio_url = self._studio_url() if backend == "postgres" else None
        root = self.resolve_root(slug, local_project_root)
        with self._slug_lock(slug):
            if self._find(slug) is not None:
                raise Conflict(f"project {slug!r} already exists", details={"slug": slug})
            if root.exists() and any(root.iterdir()):
                raise Conflict(f"the folder {root} exists and is not empty", details={"root_dir": str(root)})
            self._refuse_nested(root)
            root.parent.mkdir(parents=True, exist_ok=True)
            staging = root.parent / f".{root.name}.creating-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            now = utcnow()
            schema = catalog.schema_for(project_id) if studio_url else None
            try:
                (staging / "assets").mkdir()
                if studio_url:
                    catalog.create_schema(studio_url, schema)
                    store = Store.open_postgres(studio_url, "project", schema=schema)
                else:
                    store = Store.open_sqlite(staging / DB_NAME, "project")
                try:
                    fill(store, staging, root)
                    row = store.read(repo.get_project, project_id)  # the index mirrors what fill wrote
                finally:
                    store.close()
                if row["slug"] != slug:
                    raise Conflict(f"the project's row names slug {row['slug']!r}, not {slug!r}",
                                   details={"slug": slug})
                if studio_url:
                    catalog.register(studio_url, project_id, slug, row["name"], schema, now)
                if root.exists():
                    root.rmdir()  # empty (checked above)
                os.replace(staging, root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                if studio_url:
                    self._drop_studio_project(studio_url, project_id, schema)
                raise

            def index() -> None:
                ProjectIndex.insert(id=project_id, owner_user_id=owner["id"], slug=slug, name=row["name"],
                                    status=row["status"], root_dir=str(root), backend=backend, db_schema=schema,
                                    created_at=row["created_at"], updated_at=row["updated_at"]).execute()

            try:
                self.app.app_store.write(index)
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                if studio_url:
                    self._drop_studio_project(studio_url, project_id, schema)
                raise
            return self.open(slug)

    def attach(self, slug: str, local_project_root: str | None = None) -> ProjectHandle:
        """Opens a studio project another workstation made: found by slug in the studio's catalog, indexed here
        with a local folder for this workstation's copy of its files."""
        owner = self.app.current_user()
        studio_url = self._studio_url()
        root = self.resolve_root(slug, local_project_root)
        with self._slug_lock(slug):
            if self._find(slug) is not None:
                raise Conflict(f"project {slug!r} already exists here", details={"slug": slug})
            entry = catalog.find(studio_url, slug)
            if root.exists() and any(p.name != "assets" for p in root.iterdir()):
                raise Conflict(f"the folder {root} exists and is not empty", details={"root_dir": str(root)})
            self._refuse_nested(root)
            store = Store.open_postgres(studio_url, "project", schema=entry["db_schema"])
            try:
                row = store.read(repo.get_project, entry["id"])
                store.write(_join, owner)
            finally:
                store.close()
            (root / "assets").mkdir(parents=True, exist_ok=True)
            now = utcnow()

            def index() -> None:
                ProjectIndex.insert(id=entry["id"], owner_user_id=owner["id"], slug=slug, name=row["name"],
                                    status=row["status"], root_dir=str(root), backend="postgres",
                                    db_schema=entry["db_schema"], created_at=now, updated_at=now).execute()

            self.app.app_store.write(index)
            return self.open(slug)

    def _refuse_nested(self, root: Path) -> None:
        """A project folder may not lie inside another project's folder, nor hold one: deleting or exporting the
        outer one would take the inner one's files with it."""
        for entry in self.list(None):
            other = Path(entry["root_dir"])
            if root == other or other in root.parents or root in other.parents:
                raise Conflict(f"the folder {root} overlaps the folder of project {entry['slug']!r} ({other})",
                               details={"root_dir": str(root), "slug": entry["slug"]})

    def _studio_url(self) -> str:
        url = self.app.settings.studio_database_url
        if not url:
            raise Conflict("no studio database is configured (IAT_STUDIO_DATABASE_URL): projects on PostgreSQL "
                           "need one", details={"setting": "IAT_STUDIO_DATABASE_URL"})
        return url

    @staticmethod
    def _drop_studio_project(url: str, project_id: str, schema: str) -> None:
        try:
            catalog.unregister(url, project_id)
            catalog.drop_schema(url, schema)
        except Exception:  # noqa: BLE001 - the failure being handled is the one to report
            log.exception("could not remove the studio schema %s of a project that was not made", schema)

    def delete(self, slug: str, *, purge: bool) -> dict:
        """Marks the project deleted in its own database, moves its folder to the trash (or removes it when
        `purge`), and drops it from the index. Returns where the folder went. A studio project's rows stay in the
        shared database (marked deleted) unless `purge`, which drops its schema for every workstation."""
        owner = self.app.current_user()
        with self._slug_lock(slug):
            handle = self.open(slug)
            self.app.cancel_runs(slug)  # a run holds the project open: it stops first
            handle.store.write(repo.update_project, handle.id, {"status": "deleted"}, owner["id"], "project.deleted",
                               utcnow())
            self.close(slug)  # later calls get not_found; the ones in flight finish first (within its timeout)
            trash = self._move_to_trash(handle.root, slug)

            def unindex() -> None:
                ProjectIndex.delete().where(ProjectIndex.id == handle.id).execute()
                audit.record_app(handle.id, owner["id"], "project.deleted",
                                 {"slug": slug, "purged": purge, "trash_dir": None if purge else str(trash)})

            try:
                self.app.app_store.write(unindex)
            except BaseException:
                os.replace(trash, handle.root)  # put it back: the project stays as it was, bar its status
                raise
        if purge:
            shutil.rmtree(trash, ignore_errors=True)
            if handle.backend == "postgres":  # the studio's rows go too, for every workstation
                entry_schema = catalog.schema_for(handle.id)
                self._drop_studio_project(self._studio_url(), handle.id, entry_schema)
            return {"id": handle.id, "slug": slug, "trash_dir": None}
        return {"id": handle.id, "slug": slug, "trash_dir": str(trash)}

    def _move_to_trash(self, root: Path, slug: str) -> Path:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        target = self.app.settings.trash_dir / f"{slug}-{stamp}-{uuid.uuid4().hex[:6]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(root, target)
        except OSError:  # another filesystem (a custom project root): keep it beside where it was
            target = root.parent / f".{root.name}.deleted-{stamp}"
            os.replace(root, target)
        return target
