"""Shared fixtures: an in-process App and client, the real PostgreSQL server, the real sidecar process.

A real part that is missing (the PostgreSQL server that scripts/test starts, say) skips a test on a developer's
machine but FAILS it when IAT_REQUIRE_REAL_PARTS=1 (set by scripts/test, so always in CI).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from iat.app import App
from iat.settings import Settings

from support import Client, missing_real_part


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def app(home: Path):
    application = App(Settings.from_env({}, home=home))
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Client:
    return Client(app)


@pytest.fixture
def project(client: Client) -> dict:
    return client.call("projects.create", slug="alpha", name="Alpha")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A folder to import files from."""
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


@pytest.fixture
def alpha(client: Client, project: dict, src: Path) -> dict:
    """The `project` fixture, allowed to import from `src` (its only import root)."""
    return client.call("projects.update", slug="alpha", settings_json={"import_roots": [str(src)]})


@pytest.fixture(params=["sqlite", "postgres"])
def engine_store(request, tmp_path: Path):
    """A fresh project database on each engine: a SQLite file, and a database on the real PostgreSQL server."""
    from iat.db.store import Store

    if request.param == "sqlite":
        s = Store.open_sqlite(tmp_path / "project.db", "project")
    else:
        s = Store.open_postgres(request.getfixturevalue("pg_database"), "project")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = os.environ.get("IAT_TEST_PG_DSN")
    if not dsn:
        missing_real_part("PostgreSQL server (IAT_TEST_PG_DSN; scripts/test starts one)")
    return dsn


@pytest.fixture
def pg_database(pg_dsn: str):
    """A fresh, empty PostgreSQL database on the real server; dropped afterwards."""
    import psycopg2
    from urllib.parse import urlparse, urlunparse

    name = f"iat_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    url = urlparse(pg_dsn)
    yield urlunparse(url._replace(path=f"/{name}"))
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The loopback S3 API server scripts/test starts (moto_server, scripts/lib/s3.sh)."""
    endpoint = os.environ.get("IAT_TEST_S3_ENDPOINT")
    if not endpoint:
        missing_real_part("S3 API server (IAT_TEST_S3_ENDPOINT; scripts/test starts moto_server)")
    return endpoint
