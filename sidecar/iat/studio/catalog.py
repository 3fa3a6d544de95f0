"""The studio's catalog: which projects its shared PostgreSQL database holds, and in which schema.

One small table in the database's `public` schema, `iat_studio_projects (id, slug, name, db_schema, created_at)`,
made on first use. A workstation finds a project by slug here (projects.attach) and opens the schema named; each
project's rows stay in its own schema, so no query of one project can reach another's rows (SPEC 7).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime
from typing import Iterator
from urllib.parse import unquote, urlparse

from iat.errors import Conflict, DatabaseUnavailable, NotFound

SCHEMA_PATTERN = re.compile(r"^iat_p_[0-9a-f]{32}$")

_DDL = """CREATE TABLE IF NOT EXISTS public.iat_studio_projects (
    id UUID PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    db_schema TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
)"""


def schema_for(project_id: str) -> str:
    """The schema a project's rows live in: derived from its id, so it is a safe SQL identifier."""
    name = "iat_p_" + project_id.replace("-", "").lower()
    if not SCHEMA_PATTERN.fullmatch(name):
        raise ValueError(f"not a project id: {project_id!r}")
    return name


def _ident(schema: str) -> str:
    if not SCHEMA_PATTERN.fullmatch(schema):  # identifiers cannot be bound as parameters: checked instead
        raise ValueError(f"not a studio project schema: {schema!r}")
    return schema


def open_connection(url: str, **options):
    """A new psycopg2 connection to the studio database (`options`: libpq's, e.g. keepalives)."""
    import psycopg2

    parsed = urlparse(url)
    try:
        return psycopg2.connect(dbname=unquote(parsed.path.lstrip("/")) or "postgres", host=parsed.hostname,
                                port=parsed.port or 5432, user=unquote(parsed.username or "") or None,
                                password=unquote(parsed.password or "") or None, connect_timeout=10, **options)
    except psycopg2.OperationalError as exc:  # its message may quote the host, never the password
        raise DatabaseUnavailable(f"the studio database at {parsed.hostname}:{parsed.port or 5432} cannot be "
                                  f"reached: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
                                  details={"host": parsed.hostname, "port": parsed.port or 5432}) from None


@contextmanager
def connect(url: str) -> Iterator:
    """One autocommit connection to the studio database, for the catalog and schema DDL."""
    conn = open_connection(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(_DDL)
        yield conn
    finally:
        conn.close()


def create_schema(url: str, schema: str) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {_ident(schema)}")


def drop_schema(url: str, schema: str) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE")


def register(url: str, project_id: str, slug: str, name: str, schema: str, now: datetime) -> None:
    """Adds the project to the catalog; a slug another workstation took first is a conflict."""
    import psycopg2

    with connect(url) as conn, conn.cursor() as cur:
        try:
            cur.execute("INSERT INTO public.iat_studio_projects (id, slug, name, db_schema, created_at) "
                        "VALUES (%s, %s, %s, %s, %s)", (project_id, slug, name, schema, now))
        except psycopg2.errors.UniqueViolation:
            raise Conflict(f"the studio already has a project {slug!r}", details={"slug": slug}) from None


def unregister(url: str, project_id: str) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM public.iat_studio_projects WHERE id = %s", (project_id,))


def find(url: str, slug: str) -> dict:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, slug, name, db_schema, created_at FROM public.iat_studio_projects WHERE slug = %s",
                    (slug,))
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"the studio has no project {slug!r}", details={"slug": slug})
    return dict(zip(("id", "slug", "name", "db_schema", "created_at"), (str(row[0]), *row[1:])))


def list_all(url: str) -> list[dict]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, slug, name, db_schema, created_at FROM public.iat_studio_projects ORDER BY slug")
        return [dict(zip(("id", "slug", "name", "db_schema", "created_at"), (str(r[0]), *r[1:])))
                for r in cur.fetchall()]
