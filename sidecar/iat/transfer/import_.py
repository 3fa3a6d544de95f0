"""Importing a package (manifest.py) as a new project of this app home.

    unpack into a temp folder of ours (safe_extract: names, entry types, sizes and ratios refused on the way)
    -> the manifest read and checked: format, version, a schema this code knows, and every file's sha256 and size,
       with nothing missing and nothing unlisted
    -> project.db opened from the temp folder, which migrates an older schema (its backup stays in the temp folder)
    -> ProjectDirectory.adopt: the rows copied into the new project's store with the project's slug, id, owner and
       folder rewritten, the files moved into its staging folder, renamed into place, then indexed.

Nothing is registered before every check passed, a failure at any step leaves no project and no folder behind,
and the temp folder goes either way.

The slug is the package's unless `slug` is given; when the package's is taken, `<slug>-2`, `-3`, ... A project id
already used in this app home (the package was made here, or imported before) gets a new id, rewritten in every
row. Every user a row names becomes the importing user (this machine's users are not the exporter's).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import peewee

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.migrations import build_schema, latest_version
from iat.db.models import AppUser, Project, ProjectIndex
from iat.db.store import Store
from iat.errors import Conflict, NotFound
from iat.transfer import manifest as mf
from iat.transfer import rows
from iat.transfer.safe_extract import Limits, extract

if TYPE_CHECKING:
    from iat.app import App
    from iat.projects.directory import ProjectHandle

Progress = Callable[[int, int], None]
_SLUG_MAX = 63
_SQLITE_HEADER = b"SQLite format 3\x00"


def _refs() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per table, its columns referring to projects and to app_users (from the schema the migrations build)."""
    to_project: dict[str, list[str]] = {}
    to_user: dict[str, list[str]] = {}
    for table in build_schema("project").tables.values():
        to_project[table.name] = [c.name for c in table.columns if c.references == "projects"]
        to_user[table.name] = [c.name for c in table.columns if c.references == "app_users"]
    return to_project, to_user


def _rewrites(old_id: str, new_id: str, slug: str, owner: dict, root: Path) -> dict[str, rows.Rewrite]:
    """Row rewrites giving the rows their new project (id, slug, owner, folder)."""
    to_project, to_user = _refs()
    user_fields = set(AppUser._meta.fields)
    owner_row = {k: v for k, v in owner.items() if k in user_fields}
    users_seen: list[str] = []

    def generic(table: str) -> rows.Rewrite | None:
        projects, users = to_project.get(table, []), to_user.get(table, [])
        if not users and (not projects or old_id == new_id):
            return None

        def fix(row: dict) -> dict:
            for col in projects:
                if row.get(col) == old_id:
                    row[col] = new_id
            for col in users:
                if row.get(col) is not None:
                    row[col] = owner["id"]
            return row

        return fix

    def app_users(row: dict) -> dict | None:
        users_seen.append(row["id"])
        return dict(owner_row) if len(users_seen) == 1 else None  # one user here: the importing one

    def projects(row: dict) -> dict:
        return {**row, "id": new_id, "slug": slug, "owner_user_id": owner["id"]}

    def storage(row: dict) -> dict:
        row = {**row, "project_id": new_id, "local_base_dir": str(root.parent), "local_project_root": str(root)}
        return row

    out: dict[str, rows.Rewrite] = {}
    for model in rows.tables():
        name = model._meta.table_name
        fix = generic(name)
        if fix is not None:
            out[name] = fix
    out.update(app_users=app_users, projects=projects, project_storage=storage)
    return out


def _taken(app: App, slug: str, local_project_root: str | None) -> bool:
    if any(entry["slug"] == slug for entry in app.projects.list(None)):
        return True
    root = app.projects.resolve_root(slug, local_project_root)
    return root.exists() and any(root.iterdir())


def _slugs(app: App, wanted: str, local_project_root: str | None):
    """The package's slug, then `<slug>-2`, `-3`, ... that are free now (adopt checks again under its lock)."""
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"-{n}"
        candidate = wanted[:_SLUG_MAX - len(suffix)].rstrip("-") + suffix
        if not _taken(app, candidate, local_project_root):
            yield candidate


def _id_used(app: App, project_id: str) -> bool:
    return app.app_store.read(lambda: ProjectIndex.select().where(ProjectIndex.id == project_id).exists())


def _open_db(path: Path) -> Store:
    with open(path, "rb") as f:
        if f.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            raise mf.refuse("bad_database", "the package's project.db is not a SQLite database")
    try:
        return Store.open_sqlite(path, "project")  # migrates an older schema (backup beside it, in our temp)
    except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:
        raise mf.refuse("bad_database", f"the package's project.db cannot be opened: {exc}") from None


def _place_files(unpacked: Path, staging: Path, paths: list[str]) -> None:
    made: set[Path] = set()
    for rel in paths:
        parts = mf.check_name(rel).split("/")
        target = staging.joinpath(*parts)
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        source = unpacked.joinpath(*parts)
        try:
            os.replace(source, target)
        except OSError:  # another file system (a project folder elsewhere): copy
            shutil.copyfile(source, target)


def import_package(app: App, path: str | Path, *, slug: str | None = None, progress: Progress | None = None,
                   limits: Limits = Limits(), **adopt_kwargs) -> tuple[ProjectHandle, dict]:
    """Imports the package at `path` (a .tar.gz, a .zip or a package folder) as a new project; returns its handle
    and what happened (`source` project, `id_changed`, `slug_changed`, `rows`, `files`). `adopt_kwargs` go to
    ProjectDirectory.adopt (local_project_root, backend). Refuses with invalid_params (details.reason says why),
    payload_too_large (size, entry and ratio limits), schema_version_unsupported, not_found (no such path) or
    conflict (the `slug` asked for is taken)."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no package at {path}", details={"path": str(path)})
    tmp = app.settings.home / "tmp" / f"import-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        unpacked = tmp / "package"
        unpacked.mkdir()
        found = extract(path, unpacked, limits, progress)
        if mf.MANIFEST not in found:
            raise mf.refuse("missing_manifest", "the package has no manifest.json")
        if found[mf.MANIFEST][1] > mf.MAX_MANIFEST_BYTES:
            raise mf.refuse("bad_manifest", "manifest.json is too large")
        manifest = mf.load((unpacked / mf.MANIFEST).read_bytes(), latest_version("project"))
        del found[mf.MANIFEST]
        mf.verify(manifest, found)

        db_dir = tmp / "db"
        db_dir.mkdir()
        os.replace(unpacked / mf.DB_FILE, db_dir / mf.DB_FILE)
        src = _open_db(db_dir / mf.DB_FILE)
        try:
            return _adopt(app, src, manifest, unpacked, [p for p in found if p != mf.DB_FILE], slug, adopt_kwargs)
        finally:
            src.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _adopt(app: App, src: Store, manifest: dict, unpacked: Path, files: list[str], slug: str | None,
           adopt_kwargs: dict) -> tuple[ProjectHandle, dict]:
    projects = src.read(lambda: list(Project.select().dicts()))
    if len(projects) != 1 or projects[0]["id"] != manifest["project"]["id"]:
        raise mf.refuse("bad_database", "the package's project.db does not hold exactly the project its manifest "
                        "names")
    counted = src.read(rows.counts, True)
    wrong = sorted(t for t, n in manifest.get("row_counts", {}).items() if counted.get(t) != n)
    if wrong:
        raise mf.refuse("row_counts", f"the package's database does not hold the rows its manifest counts "
                        f"(tables {', '.join(wrong[:5])})", tables=wrong)
    source = projects[0]
    owner = app.current_user()
    new_id = str(uuid.uuid4()) if _id_used(app, source["id"]) else source["id"]
    local_root = adopt_kwargs.get("local_project_root")
    candidates = [slug] if slug else _slugs(app, source["slug"], local_root)
    written: dict[str, int] = {}
    placed = []

    for chosen in candidates:
        def fill(store: Store, staging: Path, root: Path) -> None:
            placed.append(chosen)
            written.update(rows.copy(src, store, rewrite=_rewrites(source["id"], new_id, chosen, owner, root)))
            _place_files(unpacked, staging, files)
            store.write(audit.record, new_id, owner["id"], "project.imported", {
                "source_project_id": source["id"], "source_slug": source["slug"], "slug": chosen,
                "package_created_at": manifest.get("created_at"), "app_version": manifest.get("app_version"),
                "schema_version": manifest["schema_version"], "files": len(files)})

        try:
            handle = app.projects.adopt(chosen, new_id, fill, **adopt_kwargs)
        except Conflict:
            if slug:  # the caller's choice: theirs to change
                raise
            if placed:
                raise  # the slug was free but the rows clashed (and the files moved are gone with the staging)
            continue
        return handle, {"source": {"id": source["id"], "slug": source["slug"], "name": source["name"]},
                        "id_changed": new_id != source["id"], "slug_changed": chosen != source["slug"],
                        "rows": written, "files": len(files), "schema_version": manifest["schema_version"]}
    raise Conflict(f"no free slug for {source['slug']!r}", details={"slug": source["slug"]})
