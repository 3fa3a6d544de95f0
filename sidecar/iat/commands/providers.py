"""providers.*: a project's generation providers: configuration (validated per provider), enabling, readiness
checks that spend nothing, and the call ledger's attempts (SPEC 2.5, 5.1 provider_accounts)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from iat.commands.common import Page, PageParams, ProjectRef
from iat.errors import InvalidParams, NotFound
from iat.lazy import lazy_import
from iat.registry import Result, command
from iat.rpc.openapi import PARTS_KEY

accounts = lazy_import("iat.providers.accounts")
ledger_repo = lazy_import("iat.ledger.repo")

ProviderCodeField = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$",
                          json_schema_extra={PARTS_KEY: "provider"}, description="Provider code")


class ProviderRef(ProjectRef):
    provider_code: str = ProviderCodeField


class ConfigureParams(ProviderRef):
    config: dict[str, Any] = Field(description=(
        "The provider's configuration, replacing the stored one as a whole: endpoint, model, pricing, "
        "concurrency, timeout_s, max_attempts, backoff_s, max_backoff_s, and the provider's own fields (see "
        "providers.get for the defaults). Secrets are not configuration: store them with secrets.set."))


class CheckParams(ProjectRef):
    provider_code: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$",
                                      json_schema_extra={PARTS_KEY: "provider"},
                                      description="One provider (default: every provider)")
    probe: bool = Field(True, strict=True, description="Also make each ready provider's one free call (a model "
                                                       "or system listing) to show it answers; never a generation")


class CallsParams(PageParams):
    run_id: uuid.UUID | None = None
    provider_code: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    outcome: Literal["ok", "error", "canceled"] | None = None


class ProviderOut(Result):
    provider_code: str
    operations: list[str] = Field(description="What it does: generate (a run's provider) or remove_background "
                                              "(the paid API behind the engine of that name)")
    configured: bool = Field(description="Whether the project has its own configuration (else the defaults)")
    is_enabled: bool
    config: dict = Field(description="The configuration with its defaults filled in")
    required_secrets: list[str]
    optional_secrets: list[str]
    secrets_present: list[str] = Field(description="Names of the stored secrets (never values)")
    ready: bool = Field(description="Usable now: enabled, its required secrets stored, its configuration valid")
    reason: str | None = Field(description="Why not ready, in words a user can act on")
    created_at: datetime | None
    updated_at: datetime | None


class ProviderList(Result):
    items: list[ProviderOut]


class CheckOut(Result):
    provider_code: str
    ready: bool
    reason: str | None
    probe: dict | None = Field(description="ok, latency_ms and what the provider said (ok) or the typed error "
                                           "(not ok); null when not probed")


class CheckList(Result):
    items: list[CheckOut]


class CallOut(Result):
    id: str
    call_id: str = Field(description="Shared by the attempts of one call")
    run_id: str | None
    provider_code: str
    operation_code: str
    attempt: int
    outcome: Literal["ok", "error", "canceled"]
    http_status: int | None
    error_code: str | None
    error_message: str | None
    latency_ms: int
    meta_json: dict
    created_at: datetime


class CallPage(Page):
    items: list[CallOut]


def _actor(ctx) -> str:
    return ctx.app.current_user()["id"]


def _out(ctx, code: str, row: dict | None, names: list[str]) -> ProviderOut:
    operations = list(getattr(accounts.provider_of(ctx.app, code), "operations", ("generate",)))
    return ProviderOut.model_validate({**accounts.describe(ctx.app, code, row, names), "operations": operations})


def _one(ctx, handle, code: str) -> ProviderOut:
    row, names = handle.store.read(lambda pid: (accounts.get_row(pid, code),
                                                accounts.secret_names(pid).get(code, [])), handle.id)
    return _out(ctx, code, row, names)


@command("providers.list", params=ProjectRef, result=ProviderList, route=("GET", "/api/projects/{slug}/providers"))
def list_providers(ctx, p: ProjectRef) -> ProviderList:
    """Every provider this sidecar has, with the project's configuration (or the defaults) and readiness."""
    handle = ctx.app.projects.open(p.slug)
    rows, names = handle.store.read(lambda pid: (accounts.list_rows(pid), accounts.secret_names(pid)), handle.id)
    return ProviderList(items=[_out(ctx, code, rows.get(code), names.get(code, []))
                               for code in ctx.app.providers.codes()])


@command("providers.get", params=ProviderRef, result=ProviderOut,
         route=("GET", "/api/projects/{slug}/providers/{provider_code}"), errors=(NotFound,))
def get_provider(ctx, p: ProviderRef) -> ProviderOut:
    """One provider: configuration with defaults, secrets present by name, readiness and why not."""
    handle = ctx.app.projects.open(p.slug)
    accounts.provider_of(ctx.app, p.provider_code)
    return _one(ctx, handle, p.provider_code)


@command("providers.configure", params=ConfigureParams, result=ProviderOut,
         route=("PUT", "/api/projects/{slug}/providers/{provider_code}"), mutating=True,
         errors=(NotFound, InvalidParams))
def configure(ctx, p: ConfigureParams) -> ProviderOut:
    """Replaces the provider's configuration after validating it against the provider's own model (unknown
    keys, bad endpoints, out-of-range limits are refused and change nothing)."""
    handle = ctx.app.projects.open(p.slug)
    provider = accounts.provider_of(ctx.app, p.provider_code)
    config = accounts.validate_config(provider, p.config)
    stored = config.model_dump(mode="json", exclude_unset=True)
    actor = _actor(ctx)
    handle.store.write(lambda: accounts.upsert(handle.id, actor, p.provider_code, config=stored))
    ctx.app.events.publish("provider.configured", {"project_id": handle.id, "provider_code": p.provider_code})
    return _one(ctx, handle, p.provider_code)


def _set_enabled(ctx, p: ProviderRef, enabled: bool) -> ProviderOut:
    handle = ctx.app.projects.open(p.slug)
    accounts.provider_of(ctx.app, p.provider_code)
    actor = _actor(ctx)
    handle.store.write(lambda: accounts.upsert(handle.id, actor, p.provider_code, enabled=enabled))
    ctx.app.events.publish("provider.enabled" if enabled else "provider.disabled",
                           {"project_id": handle.id, "provider_code": p.provider_code})
    return _one(ctx, handle, p.provider_code)


@command("providers.enable", params=ProviderRef, result=ProviderOut,
         route=("POST", "/api/projects/{slug}/providers/{provider_code}/enable"), mutating=True, errors=(NotFound,))
def enable(ctx, p: ProviderRef) -> ProviderOut:
    """Enables the provider for the project's runs."""
    return _set_enabled(ctx, p, True)


@command("providers.disable", params=ProviderRef, result=ProviderOut,
         route=("POST", "/api/projects/{slug}/providers/{provider_code}/disable"), mutating=True, errors=(NotFound,))
def disable(ctx, p: ProviderRef) -> ProviderOut:
    """Disables the provider: runs asking for it are refused until it is enabled again."""
    return _set_enabled(ctx, p, False)


@command("providers.check", params=CheckParams, result=CheckList,
         route=("POST", "/api/projects/{slug}/providers/check"), mutating=True, errors=(NotFound,))
def check(ctx, p: CheckParams) -> CheckList:
    """Says which providers are ready and why not; with probe, makes each ready one's free call (recorded in the
    ledger, costing nothing) to show that its endpoint answers and accepts the credentials."""
    from iat.errors import IATError

    handle = ctx.app.projects.open(p.slug)
    codes = [p.provider_code] if p.provider_code else ctx.app.providers.codes()
    items = []
    for code in codes:
        provider = accounts.provider_of(ctx.app, code)
        account = accounts.account(ctx.app, handle, code)
        status = provider.status(account)
        probe = None
        if p.probe and status.ready:
            try:
                info = ctx.app.ledger.call(handle, account, "probe",
                                           lambda a: provider.probe(account, timeout=a.timeout),
                                           billable=False, max_attempts=1)
                probe = {"ok": True, "info": info}
            except IATError as exc:
                probe = {"ok": False, "error": exc.to_object()}
        items.append(CheckOut(provider_code=code, ready=status.ready and (probe is None or probe["ok"]),
                              reason=status.reason or (None if probe is None or probe["ok"]
                                                       else probe["error"]["message"]), probe=probe))
    return CheckList(items=items)


@command("providers.calls", params=CallsParams, result=CallPage, route=("GET", "/api/projects/{slug}/provider-calls"))
def calls(ctx, p: CallsParams) -> CallPage:
    """The call ledger: every attempt of every provider call (outcome, HTTP status, typed error, latency), newest
    first; filter by run, provider or outcome; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    ctx.app.ledger.flush(handle)  # read-your-writes: attempts queued behind calls that returned are in
    rows, cursor = handle.store.read(
        lambda pid: ledger_repo.list_attempts(pid, run_id=str(p.run_id) if p.run_id else None,
                                              provider_code=p.provider_code, outcome=p.outcome, limit=p.limit,
                                              cursor=p.cursor), handle.id)
    return CallPage(items=[CallOut.model_validate(r) for r in rows], next_cursor=cursor)
