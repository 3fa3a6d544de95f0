"""A project's rows as a whole: which tables hold them, how many there are, and copying them between two stores.

A project's database (its own project.db, or its own schema in a studio's PostgreSQL) holds that project's rows
only, so "the project's rows" are every row of every project table. The tables are listed in the order the
migrations create them, which is also an order where each table comes after the tables it refers to (checked by
tests/transfer/test_rows.py), so rows can be inserted table by table with foreign keys on.

Used by exports (row counts in the manifest), imports (the package's database into a new project's store) and
moving a project to PostgreSQL.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import peewee

from iat.db.models import PROJECT_MODELS
from iat.db.store import Store

# Bookkeeping of one database, not project data: never counted or copied (the target has its own).
_NOT_PROJECT_DATA = frozenset({"schema_migrations", "run_job_claims"})
# Rows that hold secrets (ciphertext under this machine's master key): left out of exports unless asked for.
SECRET_TABLES = frozenset({"project_api_secrets"})

BATCH = 500

Rewrite = Callable[[dict], dict | None]  # a row in, the row to write out (None: leave the row out)


def tables(include_secrets: bool = True) -> list[type[peewee.Model]]:
    """The project tables in insertion order (a table after every table it refers to)."""
    return [m for m in PROJECT_MODELS if m._meta.table_name not in _NOT_PROJECT_DATA
            and (include_secrets or m._meta.table_name not in SECRET_TABLES)]


def counts(include_secrets: bool = True) -> dict[str, int]:
    """Rows per table; run inside Store.read."""
    return {m._meta.table_name: m.select().count() for m in tables(include_secrets)}


def _page(model: type[peewee.Model], after) -> list[dict]:
    """Up to BATCH rows of a table after primary key `after`, in primary-key order (keyset pages)."""
    pk = model._meta.primary_key
    query = model.select().order_by(pk).limit(BATCH)
    if after is not None:
        query = query.where(pk > after)
    return list(query.dicts())


@contextmanager
def _snapshot(src: Store) -> Iterator[Callable[[type[peewee.Model]], Iterator[list[dict]]]]:
    """One read transaction on `src` for the whole copy, so the rows copied are one consistent state of it even
    while others write (SQLite: a WAL read snapshot; PostgreSQL: REPEATABLE READ). It runs on whichever thread
    copies (the destination's writer), binding the models to `src` only while a page is read, so the
    destination's binding on that thread is back in place for each insert."""
    database = src.database
    begin = {} if src.is_sqlite else {"isolation_level": "REPEATABLE READ"}
    with src.lease(), database.connection_context(), database.atomic(**begin):
        def pages(model: type[peewee.Model]) -> Iterator[list[dict]]:
            after = None
            while True:
                with database.bind_ctx(src._models, False, False):
                    batch = _page(model, after)
                if not batch:
                    return
                yield batch
                after = batch[-1][model._meta.primary_key.name]

        yield pages


def copy(src: Store, dst: Store, *, include_secrets: bool = True,
         rewrite: dict[str, Rewrite] | None = None) -> dict[str, int]:
    """Copies every project row from `src` into `dst` (whose tables must be empty) in one write transaction on
    `dst`, so a failure leaves `dst` as it was, reading `src` in one read transaction, so what is copied is one
    consistent state of `src` while others go on writing to it. `rewrite` maps a table name to a function applied
    to each of its rows (to give the project a new id, slug or folder, say). Returns the rows written per table."""
    rewrite = rewrite or {}
    models = tables(include_secrets)

    def write() -> dict[str, int]:
        written = {m._meta.table_name: 0 for m in models}
        with _snapshot(src) as pages:
            for model in models:
                fix = rewrite.get(model._meta.table_name)
                for batch in pages(model):
                    rows = [r for r in (fix(dict(row)) if fix else row for row in batch) if r is not None]
                    if rows:
                        model.insert_many(rows).execute()
                    written[model._meta.table_name] += len(rows)
        return written

    return dst.write(write)
