"""costs.summary: what a project's provider calls cost, from cost_events (SPEC 2.5, 5.5), and its budget."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Literal

from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from iat.commands.common import ProjectRef
from iat.lazy import lazy_import
from iat.registry import Result, command

ledger_repo = lazy_import("iat.ledger.repo")


_ISO = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _iso_text(value):
    """A time given as ISO 8601 text only: pydantic would read a number (or "0.5" from a query string) as seconds
    since 1970, which the schema's date-time format does not allow."""
    if not isinstance(value, str) or not _ISO.match(value):
        raise ValueError("a date-time in ISO 8601 with its UTC offset, e.g. 2026-11-25T00:00:00Z")
    return value


# Costs are recorded now, so a time before 2000 bounds a window as 2000 does; clamping keeps any ISO time the
# schema allows (year 0001, offsets of +23:59) inside what the database's timestamps can be compared with.
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)


def _clamped_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        return _EARLIEST if value.year < 5000 else _LATEST
    return min(max(utc, _EARLIEST), _LATEST)


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_clamped_utc)]


class SummaryParams(ProjectRef):
    group_by: Literal["provider", "run", "operation", "day"] = Field(
        "provider", description="One row per provider code, run, operation code, or UTC day")
    provider_code: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    run_id: uuid.UUID | None = None
    operation_code: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+$")
    since: IsoTime | None = Field(None, description="From this time on (inclusive), with its UTC offset")
    until: IsoTime | None = Field(None, description="Before this time (exclusive), with its UTC offset; not "
                                                    "later than since: an empty window")


class CostGroup(Result):
    key: str | None = Field(description="The provider code, run id, operation code or day (YYYY-MM-DD); null: "
                                        "costs of no run")
    events: int
    cost_usd: float
    units: float


class Budget(Result):
    budget_usd: float | None = Field(description="settings_json.budget_usd; null: no budget")
    spent_usd: float = Field(description="Everything the project's calls have cost")
    left_usd: float | None


class CostSummary(Result):
    currency: Literal["USD"] = "USD"
    group_by: str
    events: int
    cost_usd: float
    units: float
    groups: list[CostGroup]
    budget: Budget


@command("costs.summary", params=SummaryParams, result=CostSummary, route=("GET", "/api/projects/{slug}/costs"))
def summary(ctx, p: SummaryParams) -> CostSummary:
    """Totals of the project's cost events, grouped by provider, run, operation or day, within an optional
    window and filters; with the project's budget, spent and left."""
    handle = ctx.app.projects.open(p.slug)
    ctx.app.ledger.flush(handle)  # read-your-writes: costs queued behind calls that returned are in
    found = handle.store.read(
        lambda pid: ledger_repo.cost_summary(pid, group_by=p.group_by, provider_code=p.provider_code,
                                             run_id=str(p.run_id) if p.run_id else None,
                                             operation_code=p.operation_code, since=p.since, until=p.until),
        handle.id)
    groups = [CostGroup(key=None if g["key"] is None else str(g["key"]), events=g["events"],
                        cost_usd=float(g["cost_usd"] or 0), units=float(g["units"] or 0)) for g in found["groups"]]
    return CostSummary(group_by=p.group_by, events=found["events"], cost_usd=float(found["cost_usd"]),
                       units=float(found["units"]), groups=groups, budget=Budget(**ctx.app.ledger.budget(handle)))
