"""Keyset pagination over (created_at DESC, id DESC): stable pages whatever is inserted meanwhile, and a page
costs the same at row 100,000 as at row 0 (an index walk, no OFFSET scan).

A cursor is the position after the last row of a page: `<microseconds since 1970 UTC>.<row id>`. Every string of
CURSOR_PATTERN is a position (times past year 9999 mean "after everything"), so the pattern in the params schema
is the whole rule: a client that follows the schema is never refused for its cursor.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from iat.errors import InvalidParams

CURSOR_PATTERN = r"^[0-9]{1,20}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_MICROS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)


def encode_cursor(row: dict) -> str:
    micros = (row["created_at"] - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row['id']}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidParams("cursor is not one this sidecar handed out", details={"errors": []})
    micros, _, row_id = cursor.partition(".")
    return _EPOCH + timedelta(microseconds=min(int(micros), _MAX_MICROS)), row_id


def keyset_page(query, model, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """One page of `query` (already scoped) newest first, and the cursor of the next page (None at the end)."""
    from peewee import Tuple  # here, not at the top: the params models import this module for CURSOR_PATTERN

    if cursor:
        created_at, row_id = decode_cursor(cursor)
        # A row-value comparison, so SQLite and PostgreSQL seek in the index instead of scanning down to it.
        # Values in a Tuple skip the fields' conversion: convert them here, as the columns store them.
        query = query.where(Tuple(model.created_at, model.id)
                            < Tuple(model.created_at.db_value(created_at), model.id.db_value(row_id)))
    rows = list(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1).dicts())
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1])
    return rows, None
