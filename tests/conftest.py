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
from iat.errors import IATError
from iat.rpc.protocol import Dispatcher, Session
from iat.settings import Settings


def missing_real_part(what: str) -> None:
    """Fails in CI, skips elsewhere."""
    if os.environ.get("IAT_REQUIRE_REAL_PARTS") == "1":
        pytest.fail(f"required real part missing: {what}")
    pytest.skip(f"real part missing: {what}")


class Client:
    """Calls commands in process through the same JSON-RPC dispatcher the transports use."""

    def __init__(self, app: App):
        self.app = app
        self.dispatcher = Dispatcher(app)
        self.session = Session("inproc", authenticated=True)

    def call(self, method: str, **params):
        return self.dispatcher.call(method, params, self.session)

    def error(self, method: str, **params) -> IATError:
        with pytest.raises(IATError) as info:
            self.call(method, **params)
        return info.value


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
