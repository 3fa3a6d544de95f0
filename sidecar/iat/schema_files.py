"""schema/: the DDL the migrations produce (dumped from real databases, never written by hand) and openapi.json.

`iat-sidecar schema --write` refreshes the files; `--check` (and the tests) fail when a file drifts from the code.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import peewee

from iat.db import migrations


def sqlite_ddl(kind: migrations.Chain) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schema.db"
        database = peewee.SqliteDatabase(str(path))
        with database.connection_context():
            migrations.migrate(database, kind)
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid").fetchall()
        finally:
            conn.close()
    return "".join(f"{sql};\n\n" for (sql,) in rows).rstrip() + "\n"


def postgres_ddl(dsn: str) -> str:
    """Migrates a scratch database on the given server and dumps its schema with pg_dump."""
    import psycopg2

    name = f"iat_schema_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    url = urlparse(dsn)
    target = urlunparse(url._replace(path=f"/{name}"))
    try:
        database = peewee.PostgresqlDatabase(name, host=url.hostname, port=url.port, user=url.username,
                                             password=url.password)
        with database.connection_context():
            migrations.migrate(database, "project")
        pg_dump = _pg_dump()
        dump = subprocess.run([pg_dump, "--schema-only", "--no-owner", "--no-privileges", "--no-comments",
                               "-d", target], check=True, capture_output=True, text=True).stdout
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return _normalise_pg_dump(dump)


def _pg_dump() -> str:
    """The newest server's pg_dump (Debian's wrapper may pick an older client)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), key=lambda p: int(p.parts[-3]))
    found = str(candidates[-1]) if candidates else shutil.which("pg_dump")
    if not found:
        raise RuntimeError("pg_dump not found")
    return found


def _normalise_pg_dump(dump: str) -> str:
    """Drops what varies by pg_dump version and session (comments, SET lines), keeps the DDL."""
    out: list[str] = []
    for line in dump.splitlines():
        if line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")):
            continue
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    return "\n".join(out).strip() + "\n"


def openapi_json() -> str:
    from iat.registry import load_commands
    from iat.rpc.openapi import openapi_document

    return json.dumps(openapi_document(load_commands()), indent=2, sort_keys=False) + "\n"


def agent_instruction_json() -> str:
    from iat.copilot.envelope import json_schema

    return json.dumps(json_schema(), indent=2) + "\n"


def expected_files(pg_dsn: str | None) -> dict[str, str]:
    files = {
        "sqlite/app.sql": sqlite_ddl("app"),
        "sqlite/project.sql": sqlite_ddl("project"),
        "openapi.json": openapi_json(),
        "agent_instruction.schema.json": agent_instruction_json(),
    }
    if pg_dsn:
        files["postgresql/project.sql"] = postgres_ddl(pg_dsn)
    return files


def drifted(directory: Path, pg_dsn: str | None) -> list[str]:
    """The files under `directory` that differ from what the code produces."""
    return [name for name, text in expected_files(pg_dsn).items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text]


def run_schema(directory: str, *, check: bool, pg_dsn: str | None) -> int:
    root = Path(directory)
    pg_dsn = pg_dsn or os.environ.get("IAT_TEST_PG_DSN")
    if not pg_dsn:
        print("no PostgreSQL server given (--pg-dsn or IAT_TEST_PG_DSN): postgresql/ left as it is", file=sys.stderr)
    if check:
        stale = drifted(root, pg_dsn)
        for name in stale:
            print(f"schema/{name} differs from what the code produces; run: iat-sidecar schema", file=sys.stderr)
        return 1 if stale else 0
    for name, text in expected_files(pg_dsn).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0
