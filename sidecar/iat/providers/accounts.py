"""provider_accounts: a project's configuration of each provider (validated by the provider's own config model),
and the `Account` a call is made with (that configuration plus the provider's secrets, decrypted at the call).

A provider without a row uses its defaults and is enabled (the spec's default); it is usable only when enabled
and its required secrets are stored.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.models import ProjectApiSecret, ProviderAccount
from iat.errors import InvalidParams, NotFound
from iat.providers.base import Account, ProviderConfig

STORED = "(stored)"  # stands for a secret's value where only its presence matters (readiness), never decrypted


def provider_of(app, code: str):
    if code not in app.providers:
        raise NotFound(f"unknown provider {code!r}; known: {', '.join(app.providers.codes())}",
                       details={"provider_code": code})
    return app.providers.get(code)


def validate_config(provider, config: dict[str, Any], loc: str = "config") -> ProviderConfig:
    """The provider's config model over `config`; every problem listed as invalid_params."""
    try:
        return provider.config_model.model_validate(config)
    except ValidationError as exc:
        problems = [{"loc": [loc, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise InvalidParams(f"invalid configuration for provider {provider.code!r}",
                            details={"errors": problems}) from None


# --- inside Store.read / Store.write ---


def get_row(project_id: str, code: str) -> dict | None:
    return (ProviderAccount.select().where((ProviderAccount.project_id == project_id)
                                           & (ProviderAccount.provider_code == code)).dicts().first())


def list_rows(project_id: str) -> dict[str, dict]:
    return {r["provider_code"]: r for r in ProviderAccount.select()
            .where(ProviderAccount.project_id == project_id).dicts()}


def secret_names(project_id: str) -> dict[str, list[str]]:
    """Provider code -> names of its stored secrets (never values)."""
    out: dict[str, list[str]] = {}
    for r in (ProjectApiSecret.select(ProjectApiSecret.provider_code, ProjectApiSecret.secret_name)
              .where(ProjectApiSecret.project_id == project_id).dicts()):
        out.setdefault(r["provider_code"], []).append(r["secret_name"])
    return out


def upsert(project_id: str, actor: str, code: str, *, config: dict | None = None, enabled: bool | None = None) -> dict:
    """Creates the row (defaults: {} and enabled) or changes what is given; one audit row."""
    now = utcnow()
    row = get_row(project_id, code)
    if row is None:
        row = {"id": str(uuid.uuid4()), "project_id": project_id, "provider_code": code,
               "is_enabled": True if enabled is None else enabled, "config_json": config or {},
               "created_at": now, "updated_at": now}
        ProviderAccount.insert(**row).execute()
    else:
        changes = {"updated_at": now}
        if config is not None:
            changes["config_json"] = config
        if enabled is not None:
            changes["is_enabled"] = enabled
        ProviderAccount.update(**changes).where(ProviderAccount.id == row["id"]).execute()
        row = {**row, **changes}
    action = ("provider.configured" if config is not None else
              "provider.enabled" if enabled else "provider.disabled")
    audit.record(project_id, actor, action, {"provider_code": code, **({"config": config} if config else {})})
    return row


# --- accounts ---


def account(app, handle, code: str, *, reveal: bool = True, model: str | None = None) -> Account:
    """The project's account of provider `code`, secrets decrypted (when `reveal`) for a call. `model` replaces the
    configured one (a run replays the model its snapshot names)."""
    from iat.secrets import repo as secrets

    provider = provider_of(app, code)
    row, names = handle.store.read(lambda pid: (get_row(pid, code), secret_names(pid).get(code, [])), handle.id)
    config = validate_config(provider, row["config_json"] if row else {})
    if model is not None and model != config.model:
        config = config.model_copy(update={"model": model})
    wanted = [n for n in (*provider.required_secrets, *provider.optional_secrets) if n in names]
    # Without reveal, a stored secret is marked present (for readiness) and its value stays encrypted.
    values = {n: secrets.reveal(app, handle, code, n) for n in wanted} if reveal else dict.fromkeys(wanted, STORED)
    return Account(code, config, values, True if row is None else bool(row["is_enabled"]))


def describe(app, code: str, row: dict | None, names: list[str]) -> dict:
    """What providers.list/get show: config with its defaults, secrets present by name, readiness and why not."""
    provider = provider_of(app, code)
    config = validate_config(provider, row["config_json"] if row else {})
    present = dict.fromkeys(names, STORED)
    status = provider.status(Account(code, config, present, True if row is None else bool(row["is_enabled"])))
    return {"provider_code": code, "configured": row is not None,
            "is_enabled": True if row is None else bool(row["is_enabled"]),
            "config": config.model_dump(mode="json"), "required_secrets": list(provider.required_secrets),
            "optional_secrets": list(provider.optional_secrets), "secrets_present": sorted(names),
            "ready": status.ready, "reason": status.reason,
            "created_at": row["created_at"] if row else None, "updated_at": row["updated_at"] if row else None}
