"""Project chain 0005: what the project's S3 mirror is known to hold (an extension table, schema/README.md).

One row per project file that a sync pushed or pulled: its path relative to the project root, sha256, size and
the remote object's ETag when it was last seen, and the local file's mtime (ns) when its sha256 was taken. A later
sync compares the local files (re-hashing only those whose size or mtime changed) and one listing of the remote
prefix against these rows, so an unchanged project transfers nothing and needs no HEAD per object; an interrupted
sync resumes from the rows its finished transfers wrote. Sizes and mtimes are numeric(20,0): files over 2 GiB and
nanosecond mtimes do not fit PostgreSQL's INTEGER."""

from iat.db.schema import Column, Table, ref, text, ts, uuid_pk

NAME = "sync_state"

OPERATIONS = (
    Table("storage_sync_objects", (
        uuid_pk(),
        ref("project_id", "projects"),
        text("path"),
        text("sha256"),
        Column("size_bytes", "numeric(20,0)"),
        text("etag", nullable=True),
        Column("mtime_ns", "numeric(20,0)", nullable=True),
        ts("synced_at"),
    ), unique=(("project_id", "path"),)),
)
