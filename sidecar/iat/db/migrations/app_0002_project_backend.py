"""App chain 0002: where a project's database lives.

`backend` is `sqlite` (the project's own project.db in root_dir, as before) or `postgres` (a schema of its own,
`db_schema`, in the studio's shared PostgreSQL database named by the settings' studio URL). The URL itself is
never stored here: it carries credentials and belongs to this machine's settings."""

from iat.db.schema import AddColumn, text

NAME = "project_backend"

OPERATIONS = (
    AddColumn("project_index", text("backend", default="sqlite", choices=("sqlite", "postgres"))),
    AddColumn("project_index", text("db_schema", nullable=True)),
)
