"""peewee fields for the representations of iat.db.schema (same Python values on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import peewee

from iat.clock import format_ts, parse_ts


class UUIDText(peewee.Field):
    """A UUID as its canonical lowercase hyphenated string (TEXT on SQLite, UUID on PostgreSQL)."""

    field_type = "UUID"

    def db_value(self, value):
        return None if value is None else str(uuid.UUID(str(value)))

    def python_value(self, value):
        return None if value is None else str(value)


class JSONObject(peewee.Field):
    """A JSON object: TEXT on SQLite, JSONB on PostgreSQL (psycopg2 hands back dicts already)."""

    field_type = "JSON"

    def db_value(self, value):
        return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def python_value(self, value):
        return json.loads(value) if isinstance(value, str) else value


class Timestamp(peewee.Field):
    """An aware UTC datetime; written as the one text form, which PostgreSQL parses into TIMESTAMPTZ."""

    field_type = "TIMESTAMPTZ"

    def db_value(self, value):
        if value is None:
            return None
        return format_ts(value) if isinstance(value, datetime) else format_ts(parse_ts(value))

    def python_value(self, value):
        return parse_ts(value) if isinstance(value, str) else value
