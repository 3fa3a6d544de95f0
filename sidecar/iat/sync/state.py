"""Repo functions over storage_sync_objects (migration project_0005): what the S3 mirror is known to hold, one row
per project file, plus the local (size, mtime_ns) the sha256 was taken at. Call inside Store.read / Store.write."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import peewee

from iat.clock import utcnow
from iat.db.models import PROJECT_MODELS

SyncObject = next(m for m in PROJECT_MODELS if m._meta.table_name == "storage_sync_objects")


@dataclass(frozen=True)
class Known:
    path: str
    sha256: str
    size_bytes: int
    etag: str | None
    mtime_ns: int | None


def known(project_id: str) -> dict[str, Known]:
    rows = (SyncObject.select(SyncObject.path, SyncObject.sha256, SyncObject.size_bytes, SyncObject.etag,
                              SyncObject.mtime_ns)
            .where(SyncObject.project_id == project_id).tuples())
    return {p: Known(p, sha, int(size), etag, None if mt is None else int(mt)) for p, sha, size, etag, mt in rows}


def upsert(project_id: str, entries: list[Known]) -> int:
    """Records what the mirror holds for these paths (one row per path, replaced)."""
    if not entries:
        return 0
    now = utcnow()
    rows = [{"id": str(uuid.uuid4()), "project_id": project_id, "path": e.path, "sha256": e.sha256,
             "size_bytes": e.size_bytes, "etag": e.etag, "mtime_ns": e.mtime_ns, "synced_at": now} for e in entries]
    for start in range(0, len(rows), 200):  # well under SQLite's bound-variable limit per statement
        (SyncObject.insert_many(rows[start:start + 200])
         .on_conflict(conflict_target=[SyncObject.project_id, SyncObject.path],
                      update={SyncObject.sha256: _excluded("sha256"),
                              SyncObject.size_bytes: _excluded("size_bytes"), SyncObject.etag: _excluded("etag"),
                              SyncObject.mtime_ns: _excluded("mtime_ns"),
                              SyncObject.synced_at: _excluded("synced_at")})
         .execute())
    return len(rows)


def _excluded(column: str):
    return peewee.EXCLUDED[column]


def forget(project_id: str, paths: list[str]) -> int:
    n = 0
    for start in range(0, len(paths), 500):
        n += (SyncObject.delete().where((SyncObject.project_id == project_id)
                                        & (SyncObject.path.in_(paths[start:start + 500]))).execute())
    return n
