"""provider_calls and cost_events: writes (inside Store.write) and reads (inside Store.read)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from peewee import fn

from iat.db.models import CostEvent, Project, ProviderCall
from iat.pagination import keyset_page

MAX_ERROR_MESSAGE = 500


def insert_attempt(project_id: str, row: dict, now: datetime) -> dict:
    """One attempt: call_id, run_id, provider_code, operation_code, attempt, outcome, http_status, error_code,
    error_message, latency_ms, meta_json."""
    message = row.get("error_message")
    full = {"id": str(uuid.uuid4()), "project_id": project_id, "created_at": now, "meta_json": {},
            **row, "error_message": message[:MAX_ERROR_MESSAGE] if message else None}
    ProviderCall.insert(**full).execute()
    return full


def insert_cost(project_id: str, row: dict, now: datetime) -> dict:
    """One cost event: run_id, provider_code, operation_code, units, cost_usd, currency, meta_json."""
    full = {"id": str(uuid.uuid4()), "project_id": project_id, "created_at": now, **row}
    CostEvent.insert(**full).execute()
    return full


def record_success(project_id: str, attempt: dict, cost: dict | None, now: datetime) -> None:
    """The successful attempt and its cost in one transaction: a call is never counted without its cost."""
    insert_attempt(project_id, attempt, now)
    if cost is not None:
        insert_cost(project_id, cost, now)


def spent_usd(project_id: str) -> Decimal:
    total = (CostEvent.select(fn.COALESCE(fn.SUM(CostEvent.cost_usd), 0))
             .where(CostEvent.project_id == project_id).scalar())
    return Decimal(str(total or 0))


def budget_usd(project_id: str) -> Decimal | None:
    """The project's budget from its settings (settings_json.budget_usd), None when it has none."""
    settings = Project.select(Project.settings_json).where(Project.id == project_id).scalar() or {}
    value = settings.get("budget_usd") if isinstance(settings, dict) else None
    return None if value is None else Decimal(str(value))


def list_attempts(project_id: str, *, run_id: str | None, provider_code: str | None, outcome: str | None,
                  limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    query = ProviderCall.select().where(ProviderCall.project_id == project_id)
    if run_id:
        query = query.where(ProviderCall.run_id == run_id)
    if provider_code:
        query = query.where(ProviderCall.provider_code == provider_code)
    if outcome:
        query = query.where(ProviderCall.outcome == outcome)
    return keyset_page(query, ProviderCall, limit, cursor)


GROUPS = {"provider": CostEvent.provider_code, "run": CostEvent.run_id, "operation": CostEvent.operation_code}


def cost_summary(project_id: str, *, group_by: str, provider_code: str | None, run_id: str | None,
                 operation_code: str | None, since: datetime | None, until: datetime | None) -> dict:
    """Totals and one row per group (provider, run, operation, or UTC day), costliest first."""
    where = CostEvent.project_id == project_id
    if provider_code:
        where &= CostEvent.provider_code == provider_code
    if run_id:
        where &= CostEvent.run_id == run_id
    if operation_code:
        where &= CostEvent.operation_code == operation_code
    if since:
        where &= CostEvent.created_at >= CostEvent.created_at.db_value(since)
    if until:
        where &= CostEvent.created_at < CostEvent.created_at.db_value(until)
    totals = (CostEvent.select(fn.COUNT(CostEvent.id).alias("events"),
                               fn.COALESCE(fn.SUM(CostEvent.cost_usd), 0).alias("cost_usd"),
                               fn.COALESCE(fn.SUM(CostEvent.units), 0).alias("units"))
              .where(where).dicts().get())
    if group_by == "day":
        # Timestamps are UTC text on SQLite and timestamptz on PostgreSQL: group in Python, one pass, rows
        # streamed (a window of events, not a table of them, in any real use).
        groups: dict[str, dict] = {}
        for row in (CostEvent.select(CostEvent.created_at, CostEvent.cost_usd, CostEvent.units)
                    .where(where).dicts().iterator()):
            g = groups.setdefault(row["created_at"].date().isoformat(),
                                  {"events": 0, "cost_usd": Decimal(0), "units": Decimal(0)})
            g["events"] += 1
            g["cost_usd"] += Decimal(row["cost_usd"])
            g["units"] += Decimal(row["units"])
        rows = [{"key": k, **v} for k, v in groups.items()]
    else:
        column = GROUPS[group_by]
        rows = list(CostEvent.select(column.alias("key"), fn.COUNT(CostEvent.id).alias("events"),
                                     fn.SUM(CostEvent.cost_usd).alias("cost_usd"),
                                     fn.SUM(CostEvent.units).alias("units"))
                    .where(where).group_by(column).dicts())
    rows.sort(key=lambda r: (-Decimal(str(r["cost_usd"] or 0)), str(r["key"])))
    return {"events": totals["events"], "cost_usd": totals["cost_usd"], "units": totals["units"], "groups": rows}
