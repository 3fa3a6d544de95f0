"""Project chain 0005: what the project's S3 mirror is known to hold (an extension table, schema/README.md).

One row per project file that a sync pushed or pulled: its path relative to the project root, sha256, size and
the remote object's ETag when it was last seen. A later sync compares the local files and one listing of the
remote prefix against these rows, so an unchanged project transfers nothing and needs no HEAD per object; an
interrupted sync resumes from the rows its finished transfers wrote."""

from iat.db.schema import Table, integer, ref, text, ts, uuid_pk

NAME = "sync_state"

OPERATIONS = (
    Table("storage_sync_objects", (
        uuid_pk(),
        ref("project_id", "projects"),
        text("path"),
        text("sha256"),
        integer("size_bytes"),
        text("etag", nullable=True),
        ts("synced_at"),
    ), unique=(("project_id", "path"),)),
)
