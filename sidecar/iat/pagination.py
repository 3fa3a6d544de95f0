"""Keyset pagination over (created_at DESC, id DESC): stable pages whatever is inserted meanwhile, and a page
costs the same at row 100,000 as at row 0 (an index walk, no OFFSET scan)."""

from __future__ import annotations

import base64
import json

from peewee import Tuple

from iat.clock import format_ts, parse_ts
from iat.errors import InvalidParams


def encode_cursor(row: dict) -> str:
    raw = json.dumps([format_ts(row["created_at"]), row["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str):
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        return parse_ts(created_at), str(row_id)
    except (ValueError, TypeError) as exc:
        raise InvalidParams("cursor is not one this sidecar handed out", details={"errors": []}) from exc


def keyset_page(query, model, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """One page of `query` (already scoped) newest first, and the cursor of the next page (None at the end)."""
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
