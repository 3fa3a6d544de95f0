"""The canonical schema: every table, column, unique constraint and index of SPEC sections 5 and 6, on SQLite and
PostgreSQL, read from the specification itself; schema/ matches what the migrations produce."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import peewee
import pytest

from iat.db import migrations
from iat.schema_files import drifted

from support import missing_real_part

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "SPEC.md"


def _spec() -> tuple[dict[str, list[str]], dict[str, list[tuple[str, ...]]], list[tuple[str, tuple[str, ...]]]]:
    """(columns per table in order, unique constraints per table, indexes of section 6) parsed from SPEC.md."""
    if not SPEC.is_file():
        missing_real_part(f"the specification at {SPEC}")
    text = SPEC.read_text(encoding="utf-8")
    body, section6 = text.split("## 6. Required Indexes", 1)
    section6 = section6.split("## 7.", 1)[0]
    body = body.split("## 5. Database Design", 1)[1]
    columns: dict[str, list[str]] = {}
    uniques: dict[str, list[tuple[str, ...]]] = {}
    for block in re.split(r"^### ", body, flags=re.M)[1:]:
        name = re.match(r"`(\w+)`", block).group(1)
        columns[name] = re.findall(r"^\d+\. `(\w+) [A-Z]", block, flags=re.M)
        uniques[name] = [tuple(c.strip() for c in m.split(","))
                         for m in re.findall(r"^\d+\. unique `\(([^)]*)\)`", block, flags=re.M)]
        uniques[name] += [(c,) for c in re.findall(r"^\d+\. `(\w+) [^`]*UNIQUE[^`]*`", block, flags=re.M)]
    indexes = [(t, tuple(k.strip() for k in keys.split(",")))
               for t, keys in re.findall(r"^\d+\. `(\w+)\(([^)]*)\)`", section6, flags=re.M)]
    return columns, uniques, indexes


@pytest.fixture
def sqlite_project_db(tmp_path: Path) -> Path:
    path = tmp_path / "project.db"
    database = peewee.SqliteDatabase(str(path))
    with database.connection_context():
        migrations.migrate(database, "project")
    return path


def test_spec_parsed_completely():
    columns, uniques, indexes = _spec()
    assert len(columns) == 24 and all(columns.values())
    assert len(indexes) == 13
    assert ("owner_user_id", "slug") in uniques["projects"]


def test_sqlite_tables_columns_constraints_indexes(sqlite_project_db: Path):
    columns, uniques, indexes = _spec()
    conn = sqlite3.connect(sqlite_project_db)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(columns) <= tables
    # The extension tables of project.db, each documented in schema/README.md.
    assert tables - set(columns) == {"schema_migrations", "provider_calls", "run_job_claims", "storage_sync_objects",
                                     "agent_dispatches"}
    assert "`provider_calls(" in (Path(__file__).parent.parent / "schema" / "README.md").read_text()
    for table, cols in columns.items():
        assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == cols, table
        unique_sets = set()
        for _, name, unique, *_ in conn.execute(f"PRAGMA index_list({table})"):
            if unique:
                unique_sets.add(tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})")))
        for constraint in uniques[table]:
            assert constraint in unique_sets, (table, constraint)
    for table, keys in indexes:
        wanted = [(k.split()[0], k.split()[1] if " " in k else "ASC") for k in keys]
        found = []
        for _, name, *_ in conn.execute(f"PRAGMA index_list({table})"):
            info = [(r[2], "DESC" if r[3] else "ASC") for r in conn.execute(f"PRAGMA index_xinfo({name})") if r[5]]
            found.append(info)
        assert wanted in found, (table, keys)


def test_sqlite_foreign_keys_follow_the_spec(sqlite_project_db: Path):
    if not SPEC.is_file():
        missing_real_part(f"the specification at {SPEC}")
    text = SPEC.read_text(encoding="utf-8")
    conn = sqlite3.connect(sqlite_project_db)
    for block in re.split(r"^### ", text.split("## 6.", 1)[0], flags=re.M)[1:]:
        table = re.match(r"`(\w+)`", block).group(1)
        wanted = set(re.findall(r"`(\w+) UUID[^`]*FK -> (\w+)\.id`", block))
        found = {(r[3], r[2]) for r in conn.execute(f"PRAGMA foreign_key_list({table})")}
        assert wanted == found, table


def test_sqlite_checks_enforce_enumerations_and_representations(sqlite_project_db: Path):
    conn = sqlite3.connect(sqlite_project_db)
    conn.execute("PRAGMA foreign_keys=ON")
    user = "00000000-0000-4000-8000-000000000001"
    ts = "2026-01-01T00:00:00.000000Z"
    conn.execute("INSERT INTO app_users (id, username, display_name, is_active, created_at, updated_at) "
                 "VALUES (?, 'u', 'U', 1, ?, ?)", (user, ts, ts))
    insert = ("INSERT INTO projects (id, owner_user_id, slug, name, status, settings_json, created_at, updated_at) "
              "VALUES (?, ?, 'p', 'P', ?, ?, ?, ?)")
    pid = "0000000a-0000-4000-8000-00000000000b"
    bad_rows = [
        (pid, user, "gone", "{}", ts, ts),  # status not in the enumeration
        (pid, user, "active", "[1]", ts, ts),  # JSON but not an object
        (pid, user, "active", "{", ts, ts),  # not JSON
        (pid, user, "active", "{}", "2026-01-01 00:00:00", ts),  # another timestamp form
        (pid.upper(), user, "active", "{}", ts, ts),  # another UUID form
        (pid, "00000000-0000-4000-8000-00000000dead", "active", "{}", ts, ts),  # dangling owner
    ]
    for row in bad_rows:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(insert, row)
    conn.execute(insert, (pid, user, "active", "{}", ts, ts))


def test_postgres_schema_matches_the_spec(pg_database: str):
    columns, uniques, indexes = _spec()
    import psycopg2

    from urllib.parse import urlparse

    url = urlparse(pg_database)
    database = peewee.PostgresqlDatabase(url.path[1:], host=url.hostname, port=url.port, user=url.username)
    with database.connection_context():
        assert migrations.migrate(database, "project") == (0, migrations.latest_version("project"))
    conn = psycopg2.connect(pg_database)
    cur = conn.cursor()
    for table, cols in columns.items():
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name=%s ORDER BY ordinal_position",
                    (table,))
        assert [r[0] for r in cur.fetchall()] == cols, table
    cur.execute("SELECT indexdef FROM pg_indexes WHERE schemaname='public'")
    defs = [r[0] for r in cur.fetchall()]
    for table, keys in indexes:
        assert any(f"ON public.{table} USING btree ({', '.join(k.replace(' ASC', '') for k in keys)})" in d
                   for d in defs), (table, keys)
    conn.close()


def test_schema_files_match_the_migrations(pg_dsn: str):
    assert drifted(ROOT / "schema", pg_dsn) == []
