"""One database (SQLite file or PostgreSQL) with its writes serialised through one writer thread.

Reads run on the calling thread on a pooled connection; writes are handed to the database's single writer thread
(datasette's execute_write_fn pattern), so SQLite never sees two of our writers at once. Each read and write runs in
one transaction with the models bound to this database for that thread only.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from iat.clock import utcnow
from iat.db import migrations
from iat.db.models import APP_MODELS, PROJECT_MODELS
from iat.errors import Conflict

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,  # ms; another process (a second sidecar, a backup tool) may hold the lock briefly
    "synchronous": "normal",  # safe with WAL: a crash loses at most the last commits, never consistency
}


class Store:
    def __init__(self, database: peewee.Database, chain: migrations.Chain, label: str):
        self.database = database
        self.chain = chain
        self.label = label
        self._models = APP_MODELS if chain == "app" else PROJECT_MODELS
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"iat-writer-{label}")
        self._local = threading.local()
        self._closed = False

    # --- opening ---

    @classmethod
    def open_sqlite(cls, path: Path, chain: migrations.Chain) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        database = PooledSqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, max_connections=32, stale_timeout=300,
                                        timeout=30, check_same_thread=False)
        store = cls(database, chain, label=path.parent.name or path.stem)
        store._migrate(backup=lambda version: _backup_sqlite(path, version))
        return store

    @classmethod
    def open_postgres(cls, dsn: str, chain: migrations.Chain) -> Store:
        url = urlparse(dsn)
        database = PooledPostgresqlDatabase(
            unquote(url.path.lstrip("/")) or "postgres", host=url.hostname, port=url.port or 5432,
            user=unquote(url.username or "") or None, password=unquote(url.password or "") or None,
            max_connections=32, stale_timeout=300, timeout=30)
        store = cls(database, chain, label=f"pg-{url.path.lstrip('/')}")
        # A shared PostgreSQL is backed up by its operator (pg_dump); SQLite files are backed up by us.
        store._migrate(backup=None)
        return store

    def _migrate(self, backup: Callable[[int], object] | None) -> None:
        with self.database.connection_context():
            before, after = migrations.migrate(self.database, self.chain, backup=backup)
        if before != after:
            log.info("migrated %s database %s from version %d to %d", self.chain, self.label, before, after)

    # --- use ---

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs fn(*args) in a read transaction on this thread."""
        self._check_open()
        with self.database.connection_context(), self.database.bind_ctx(self._models, False, False):
            with self.database.atomic():
                return fn(*args)

    def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs fn(*args) in one write transaction on the writer thread and waits for its result."""
        self._check_open()
        if getattr(self._local, "in_writer", False):  # a write that calls another write: already serialised
            return fn(*args)
        return self._writer.submit(self._run_write, fn, args).result()

    def _run_write(self, fn: Callable[..., T], args: tuple) -> T:
        self._local.in_writer = True
        try:
            with self.database.connection_context(), self.database.bind_ctx(self._models, False, False):
                txn = self.database.atomic("IMMEDIATE") if self.is_sqlite else self.database.atomic()
                with txn:
                    return fn(*args)
        except peewee.IntegrityError as exc:
            # Domain code checks what it can first; this keeps a race or a missed case a typed error.
            raise Conflict(f"the change conflicts with existing data: {_first_line(exc)}") from exc
        finally:
            self._local.in_writer = False

    @property
    def is_sqlite(self) -> bool:
        return migrations.dialect_of(self.database) == "sqlite"

    def schema_version(self) -> int:
        with self.database.connection_context():
            return migrations.current_version(self.database)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"store {self.label} is closed")

    def close(self) -> None:
        """Finishes queued writes, folds the WAL back into the database file and closes every connection."""
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        if self.is_sqlite:
            try:
                with self.database.connection_context():
                    self.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except peewee.OperationalError as exc:  # another process still reads it: the WAL stays, harmlessly
                log.debug("checkpoint of %s skipped: %s", self.label, exc)
        self.database.close_all()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _backup_sqlite(path: Path, version: int) -> Path:
    """A consistent copy (SQLite's online backup API) beside the database, before a migration changes it."""
    target = path.with_name(f"{path.stem}.v{version}.{utcnow().strftime('%Y%m%dT%H%M%S%f')}.bak")
    source = sqlite3.connect(str(path))
    try:
        dest = sqlite3.connect(str(target))
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    log.info("backed up %s (schema version %d) to %s", path, version, target)
    return target
