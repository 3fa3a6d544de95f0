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
from typing import Literal

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


def create_table_sql(table: Table, dialect: Dialect) -> str:
    lines = []
    for col in table.columns:
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
        lines.append("    " + " ".join(parts))
    for cols in table.unique:
        lines.append(f"    UNIQUE ({', '.join(cols)})")
    return f"CREATE TABLE {table.name} (\n" + ",\n".join(lines) + "\n)"


def create_index_sql(index: Index, dialect: Dialect) -> str:  # noqa: ARG001 - same in both dialects today
    unique = "UNIQUE " if index.unique else ""
    return f"CREATE {unique}INDEX {index.name} ON {index.table} ({', '.join(index.keys)})"
