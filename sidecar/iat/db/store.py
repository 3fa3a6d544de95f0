"""One database (SQLite file or PostgreSQL) with its writes serialised through one writer thread.

Reads run on the calling thread on a pooled connection; writes are handed to the database's single writer thread
(datasette's execute_write_fn pattern), so SQLite never sees two of our writers at once. Each read and write runs in
one transaction with the models bound to this database for that thread only. A read or write inside another one on
the same thread joins the outer transaction.

Every read, write and `lease()` holds a lease on the store: `close()` refuses new ones at once (with the store's
typed `closed_error`) and closes the connections only when the last lease is returned, so a call in flight on
another thread never has its connection closed under it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from iat.clock import utcnow
from iat.db import migrations
from iat.db.models import APP_MODELS, PROJECT_MODELS
from iat.errors import Conflict, IATError, ShuttingDown

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,  # ms; another process (a second sidecar, a backup tool) may hold the lock briefly
    "synchronous": "normal",  # safe with WAL: a crash loses at most the last commits, never consistency
}


class SchemaPostgresDatabase(PooledPostgresqlDatabase):
    """PostgreSQL with the tables in one schema (`iat_schema`, on the connections' search_path): peewee's table
    listing looks there rather than in `public`."""

    iat_schema = "public"

    def get_tables(self, schema=None):
        return super().get_tables(schema or self.iat_schema)


def _shutting_down() -> IATError:
    return ShuttingDown("the database is closed: the sidecar is shutting down")


class Store:
    def __init__(self, database: peewee.Database, chain: migrations.Chain, label: str):
        self.database = database
        self.chain = chain
        self.label = label
        self._models = APP_MODELS if chain == "app" else PROJECT_MODELS
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"iat-writer-{label}")
        self._local = threading.local()  # depth: this thread's open reads; in_writer: on the writer thread
        self._closed = False
        self._released = False
        self._orphaned = False  # closed with calls still in flight: the last of them releases the connections
        self._leases = 0
        self._idle = threading.Condition()
        # What a call on a closed store gets; the project directory names the project here.
        self.closed_error: Callable[[], IATError] = _shutting_down

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
    def open_postgres(cls, dsn: str, chain: migrations.Chain, *, schema: str | None = None) -> Store:
        """A PostgreSQL database; with `schema`, every table lives in that schema (it must exist): a studio keeps
        each project in a schema of its own in one shared database."""
        url = urlparse(dsn)
        options = {"options": f"-c search_path={schema}"} if schema else {}
        database = SchemaPostgresDatabase(
            unquote(url.path.lstrip("/")) or "postgres", host=url.hostname, port=url.port or 5432,
            user=unquote(url.username or "") or None, password=unquote(url.password or "") or None,
            max_connections=32, stale_timeout=300, timeout=30, **options)
        database.iat_schema = schema or "public"
        store = cls(database, chain, label=f"pg-{url.path.lstrip('/')}" + (f"-{schema}" if schema else ""))
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
        """Runs fn(*args) in a read transaction on this thread (inside the current one when nested)."""
        if getattr(self._local, "in_writer", False) or getattr(self._local, "depth", 0):
            return fn(*args)
        with self.lease():
            self._local.depth = 1
            try:
                with self.database.connection_context(), self.database.bind_ctx(self._models, False, False):
                    with self.database.atomic():
                        return fn(*args)
            finally:
                self._local.depth = 0

    def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs fn(*args) in one write transaction on the writer thread and waits for its result."""
        if getattr(self._local, "in_writer", False):  # a write that calls another write: already serialised
            return fn(*args)
        with self.lease():
            return self._writer.submit(self._run_write, fn, args).result()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future:
        """Queues fn(*args) as one write transaction on the writer thread without waiting for it (records whose
        caller must not wait, such as the provider call ledger's). Writes run in the order they are queued, so any
        write queued later commits after this one; close() finishes it first. The future holds the result or the
        error (a done-callback should look)."""
        with self._idle:
            if self._closed:
                raise self.closed_error()
            self._leases += 1
        try:
            future = self._writer.submit(self._run_write, fn, args)
        except BaseException:
            self._leave()
            raise
        future.add_done_callback(lambda _: self._leave(on_writer=True))
        return future

    def _leave(self, on_writer: bool = False) -> None:
        with self._idle:
            self._leases -= 1
            last = self._orphaned and self._leases == 0  # close() gave up waiting: the last one out releases
            self._idle.notify_all()
        if last:
            if on_writer:  # the writer cannot wait for itself to stop: release from another thread
                threading.Thread(target=self._release, name=f"close-{self.label}", daemon=True).start()
            else:
                self._release()

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

    @contextmanager
    def lease(self) -> Iterator[Store]:
        """Holds the store open for a longer operation (one that also writes files, say): close() waits for it."""
        with self._idle:
            if self._closed:
                raise self.closed_error()
            self._leases += 1
        try:
            yield self
        finally:
            self._leave()

    @property
    def is_sqlite(self) -> bool:
        return migrations.dialect_of(self.database) == "sqlite"

    def schema_version(self) -> int:
        with self.database.connection_context():
            return migrations.current_version(self.database)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 5.0) -> bool:
        """Refuses new calls at once, waits up to `timeout` for the leases in flight, then finishes queued writes,
        folds the WAL back into the database file and closes every connection. Returns False when leases were
        still held at the timeout: the last one to leave closes the connections then."""
        with self._idle:
            if self._closed:
                return self._released
            self._closed = True
            idle = self._idle.wait_for(lambda: self._leases == 0, timeout)
            self._orphaned = not idle
        if idle:
            self._release()
        else:
            log.warning("store %s closes with %d calls in flight; its connections close when they finish",
                        self.label, self._leases)
        return idle

    def _release(self) -> None:
        with self._idle:
            if self._released:
                return
            self._released = True
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
