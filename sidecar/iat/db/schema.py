"""A small declarative schema language, rendered to SQLite and PostgreSQL DDL.

Migrations are written in it, the peewee models are generated from the schema the migrations build, and
`schema/*.sql` is dumped from real databases the migrations created. One representation per engine:

| logical     | SQLite                                          | PostgreSQL   |
|-------------|-------------------------------------------------|--------------|
| uuid        | TEXT, 36-char lowercase hyphenated              | UUID         |
| json        | TEXT holding a JSON object (json_valid checked) | JSONB object |
| timestamptz | TEXT 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (UTC)        | TIMESTAMPTZ  |
| bool        | INTEGER 0/1                                     | BOOLEAN      |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Dialect = Literal["sqlite", "postgres"]
DIALECTS: tuple[Dialect, ...] = ("sqlite", "postgres")

_NO_DEFAULT = object()

_TS_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # uuid | text | json | timestamptz | bool | int | numeric(p,s)
    nullable: bool = False
    default: object = _NO_DEFAULT
    primary_key: bool = False
    unique: bool = False
    references: str | None = None  # table name; the column refers to its id
    on_delete: str | None = None  # CASCADE | SET NULL
    choices: tuple[str, ...] | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    unique: tuple[tuple[str, ...], ...] = ()

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    keys: tuple[str, ...]  # column names, each optionally followed by " DESC"
    unique: bool = False


@dataclass(frozen=True)
class AddColumn:
    """Adds a column to an existing table. A NOT NULL column needs a default (existing rows get it); SQLite also
    refuses a non-null default on a foreign key column, so a new reference column must be nullable."""

    table: str
    column: Column

    def __post_init__(self) -> None:
        col = self.column
        if col.primary_key or col.unique:
            raise ValueError(f"{self.table}.{col.name}: ALTER TABLE cannot add a primary key or unique column; "
                             "add the column, then a unique Index")
        if not col.nullable and not col.has_default:
            raise ValueError(f"{self.table}.{col.name}: a NOT NULL column added to a table needs a default")
        if col.references and not col.nullable:
            raise ValueError(f"{self.table}.{col.name}: an added reference column must be nullable")


@dataclass(frozen=True)
class DataStep:
    """Changes rows, not the schema: SQL statements per dialect, or `fn(database, dialect)` for what SQL cannot
    say portably. Runs inside the migration's transaction, after the operations listed before it."""

    name: str
    sql: dict[str, tuple[str, ...]] | None = None
    fn: Callable[[Any, str], None] | None = None

    def __post_init__(self) -> None:
        if (self.sql is None) == (self.fn is None):
            raise ValueError(f"data step {self.name!r} needs exactly one of sql and fn")
        if self.sql is not None and set(self.sql) != set(DIALECTS):
            raise ValueError(f"data step {self.name!r} needs SQL for each dialect: {', '.join(DIALECTS)}")


@dataclass(frozen=True)
class Schema:
    """The tables and indexes a chain of migrations has built, in creation order."""

    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)


# --- column constructors: keep migrations short and uniform ---


def uuid_pk() -> Column:
    return Column("id", "uuid", primary_key=True)


def ref(name: str, table: str, *, nullable: bool = False, on_delete: str | None = None) -> Column:
    if on_delete is None:
        on_delete = "SET NULL" if nullable else "CASCADE"
    return Column(name, "uuid", nullable=nullable, references=table, on_delete=on_delete)


def text(name: str, *, default: object = _NO_DEFAULT, nullable: bool = False,
         choices: tuple[str, ...] | None = None, unique: bool = False) -> Column:
    return Column(name, "text", nullable=nullable, default=default, choices=choices, unique=unique)


def json_obj(name: str, *, default: bool = True) -> Column:
    return Column(name, "json", default="{}" if default else _NO_DEFAULT)


def ts(name: str, *, nullable: bool = False) -> Column:
    return Column(name, "timestamptz", nullable=nullable)


def boolean(name: str, default: bool) -> Column:
    return Column(name, "bool", default=default)


def integer(name: str, *, default: object = _NO_DEFAULT, nullable: bool = False) -> Column:
    return Column(name, "int", default=default, nullable=nullable)


def numeric(name: str, precision: int, scale: int, default: object = _NO_DEFAULT) -> Column:
    return Column(name, f"numeric({precision},{scale})", default=default)


def created() -> Column:
    return ts("created_at")


def updated() -> Column:
    return ts("updated_at")


# --- rendering ---


def _sql_type(col: Column, dialect: Dialect) -> str:
    if col.type.startswith("numeric"):
        return col.type.upper()
    table = {
        "sqlite": {"uuid": "TEXT", "text": "TEXT", "json": "TEXT", "timestamptz": "TEXT", "bool": "INTEGER",
                   "int": "INTEGER"},
        "postgres": {"uuid": "UUID", "text": "TEXT", "json": "JSONB", "timestamptz": "TIMESTAMPTZ",
                     "bool": "BOOLEAN", "int": "INTEGER"},
    }
    return table[dialect][col.type]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _default_sql(col: Column, dialect: Dialect) -> str:
    value = col.default
    if col.type == "bool":
        return ("1" if value else "0") if dialect == "sqlite" else ("TRUE" if value else "FALSE")
    if col.type == "json":
        return _quote(str(value)) + ("::jsonb" if dialect == "postgres" else "")
    if isinstance(value, str):
        return _quote(value)
    return str(value)


def _checks(col: Column, dialect: Dialect) -> list[str]:
    n = col.name
    out: list[str] = []
    if col.choices:
        out.append(f"{n} IN ({', '.join(_quote(c) for c in col.choices)})")
    if dialect == "sqlite":
        if col.type == "uuid":
            out.append(f"length({n}) = 36 AND {n} = lower({n})")
        elif col.type == "json":
            out.append(f"json_valid({n}) AND json_type({n}) = 'object'")
        elif col.type == "timestamptz":
            out.append(f"{n} GLOB '{_TS_GLOB}'")
        elif col.type == "bool":
            out.append(f"{n} IN (0, 1)")
    elif col.type == "json":
        out.append(f"jsonb_typeof({n}) = 'object'")
    return out


def column_sql(col: Column, dialect: Dialect) -> str:
    parts = [col.name, _sql_type(col, dialect)]
    if col.primary_key:
        parts.append("PRIMARY KEY")
    elif not col.nullable:
        parts.append("NOT NULL")
    if col.unique:
        parts.append("UNIQUE")
    if col.has_default:
        parts.append("DEFAULT " + _default_sql(col, dialect))
    if col.references:
        parts.append(f"REFERENCES {col.references} (id)")
        if col.on_delete:
            parts.append("ON DELETE " + col.on_delete)
    for check in _checks(col, dialect):
        parts.append(f"CHECK ({check})")
    return " ".join(parts)


def create_table_sql(table: Table, dialect: Dialect) -> str:
    lines = ["    " + column_sql(col, dialect) for col in table.columns]
    for cols in table.unique:
        lines.append(f"    UNIQUE ({', '.join(cols)})")
    return f"CREATE TABLE {table.name} (\n" + ",\n".join(lines) + "\n)"


def add_column_sql(op: AddColumn, dialect: Dialect) -> str:
    return f"ALTER TABLE {op.table} ADD COLUMN {column_sql(op.column, dialect)}"


def create_index_sql(index: Index, dialect: Dialect) -> str:  # noqa: ARG001 - same in both dialects today
    unique = "UNIQUE " if index.unique else ""
    return f"CREATE {unique}INDEX {index.name} ON {index.table} ({', '.join(index.keys)})"
