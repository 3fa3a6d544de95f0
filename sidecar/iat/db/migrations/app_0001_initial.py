"""App chain 0001: the users, the index of projects on this machine and the app-level audit trail."""

from iat.db.migrations.project_0001_canonical import APP_USERS
from iat.db.schema import Index, Table, created, json_obj, ref, text, updated, uuid_pk, Column

NAME = "users_and_project_index"

OPERATIONS = (
    APP_USERS,
    # Where each project lives; the project's own project.db is authoritative for everything else.
    Table("project_index", (
        Column("id", "uuid", primary_key=True),  # the project's id in its project.db
        ref("owner_user_id", "app_users", on_delete="RESTRICT"),
        text("slug"),
        text("name"),
        text("status", choices=("active", "archived", "deleted")),
        text("root_dir"),
        created(), updated(),
    ), unique=(("owner_user_id", "slug"),)),
    # Events that outlive a project's own database (its deletion, say).
    Table("app_audit_events", (
        uuid_pk(),
        Column("project_id", "uuid", nullable=True),
        ref("actor_user_id", "app_users", nullable=True),
        text("event_code"),
        json_obj("payload_json"),
        created(),
    )),
    Index("ix_app_audit_events_created", "app_audit_events", ("created_at DESC", "id DESC")),
)
