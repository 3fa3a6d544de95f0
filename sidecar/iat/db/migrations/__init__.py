"""Ordered, forward-only migrations, each applied in its own transaction and recorded in `schema_migrations`.

Two chains: "app" (app.db: users and the project index) and "project" (every project.db, or a shared PostgreSQL
database: the canonical schema). A migration module holds NAME and OPERATIONS, run in order: schema.Table (create
a table), schema.Index (create an index), schema.AddColumn (add a column to a table) and schema.DataStep (change
rows, with SQL per dialect or a function). Its version is its position in the chain. Never edit a released
migration: add the next one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

from iat.clock import format_ts, utcnow
from iat.db.schema import (AddColumn, Column, DataStep, Dialect, Index, Schema, Table, add_column_sql,
                           create_index_sql, create_table_sql, ts)
from iat.errors import MigrationFailed, SchemaVersionError

Chain = Literal["app", "project"]

_CHAINS: dict[Chain, tuple[str, ...]] = {
    "app": ("app_0001_initial", "app_0002_project_backend"),
    "project": ("project_0001_canonical", "project_0002_asset_kind_pages", "project_0003_provider_ledger",
                "project_0004_job_claims", "project_0005_sync_state",
                "project_0006_agent_dispatch"),
}

VERSION_TABLE = Table("schema_migrations", (
    Column("version", "int", primary_key=True),
    Column("name", "text"),
    ts("applied_at"),
))


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    operations: tuple[Table | Index | AddColumn | DataStep, ...]


def chain(kind: Chain) -> list[Migration]:
    out = []
    for version, module_name in enumerate(_CHAINS[kind], start=1):
        module = importlib.import_module(f"iat.db.migrations.{module_name}")
        out.append(Migration(version, module.NAME, tuple(module.OPERATIONS)))
    return out


def latest_version(kind: Chain) -> int:
    return len(_CHAINS[kind])  # without importing the migrations: sidecar.ready reports it at start


def build_schema(kind: Chain) -> Schema:
    """The schema the whole chain builds (what the peewee models are generated from)."""
    schema = Schema()
    for migration in chain(kind):
        for op in migration.operations:
            _fold(schema, op)
    return schema


def _fold(schema: Schema, op: Table | Index | AddColumn | DataStep) -> None:
    if isinstance(op, Table):
        schema.tables[op.name] = op
    elif isinstance(op, Index):
        schema.indexes[op.name] = op
    elif isinstance(op, AddColumn):
        table = schema.tables[op.table]
        schema.tables[op.table] = Table(table.name, table.columns + (op.column,), table.unique)
    elif not isinstance(op, DataStep):  # pragma: no cover - a migration author's mistake
        raise TypeError(f"unknown migration operation {op!r}")


def run_operation(database, op: Table | Index | AddColumn | DataStep, dialect: Dialect) -> None:
    if isinstance(op, DataStep):
        if op.fn is not None:
            op.fn(database, dialect)
        else:
            for statement in op.sql[dialect]:
                database.execute_sql(statement)
        return
    if isinstance(op, Table):
        sql = create_table_sql(op, dialect)
    elif isinstance(op, Index):
        sql = create_index_sql(op, dialect)
    else:
        sql = add_column_sql(op, dialect)
    database.execute_sql(sql)


def dialect_of(database) -> Dialect:
    import peewee

    return "postgres" if isinstance(database, peewee.PostgresqlDatabase) else "sqlite"


def _has_table(database, name: str) -> bool:
    return name in database.get_tables()


def current_version(database) -> int:
    """0 for an empty database; refuses a non-empty database that has no migration history."""
    if not _has_table(database, VERSION_TABLE.name):
        if database.get_tables():
            raise SchemaVersionError(
                "the database holds tables but no schema_migrations history; it was not created by IAT Toolkit")
        return 0
    row = database.execute_sql("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def check_version(database, kind: Chain) -> int:
    """The database's version, or SchemaVersionError when it is newer than this code knows."""
    found, known = current_version(database), latest_version(kind)
    if found > known:
        raise SchemaVersionError(
            f"the {kind} database is at schema version {found}, newer than this sidecar supports ({known}); "
            "upgrade IAT Toolkit to open it",
            details={"database_version": found, "supported_version": known})
    return found


def migrate(database, kind: Chain, *, backup: Callable[[int], object] | None = None) -> tuple[int, int]:
    """Brings `database` to the latest version of `kind`; returns (from_version, to_version).

    `backup(from_version)` is called once before an existing (non-empty) database is changed.
    """
    dialect = dialect_of(database)
    start = check_version(database, kind)
    pending = [m for m in chain(kind) if m.version > start]
    if not pending:
        return start, start
    if start > 0 and backup is not None:
        backup(start)
    for migration in pending:
        try:
            _apply(database, kind, dialect, migration)
        except SchemaVersionError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MigrationFailed(
                f"migration {migration.version} ({migration.name}) of the {kind} database failed and was rolled "
                f"back; the database stays at version {current_version(database)}: {first}",
                details={"chain": kind, "version": migration.version, "name": migration.name}) from exc
    return start, latest_version(kind)


def _apply(database, kind: Chain, dialect: Dialect, migration: Migration) -> None:
    """One migration in one transaction, recorded in schema_migrations; nothing of it stays if a step fails."""
    with _migration_transaction(database, dialect):
        if not _has_table(database, VERSION_TABLE.name):
            database.execute_sql(create_table_sql(VERSION_TABLE, dialect))
        # Another process may have applied it while we waited for the lock.
        if check_version(database, kind) >= migration.version:
            return
        for op in migration.operations:
            run_operation(database, op, dialect)
        database.execute_sql(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)"
            .replace("%s", database.param),
            (migration.version, migration.name, format_ts(utcnow())))


def _migration_transaction(database, dialect: Dialect):
    if dialect == "sqlite":
        return database.atomic("IMMEDIATE")
    txn = database.atomic()

    class _Locked:
        def __enter__(self):
            txn.__enter__()
            # Serialise concurrent migrators of one shared PostgreSQL database.
            database.execute_sql("SELECT pg_advisory_xact_lock(hashtext('iat_schema_migrations'))")

        def __exit__(self, *exc):
            return txn.__exit__(*exc)

    return _Locked()
