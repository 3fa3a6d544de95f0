"""secrets.*: a project's provider secrets (API keys), encrypted at rest (iat.secrets.vault). Values are write-only:
no command returns one; connectors decrypt inside the process with iat.secrets.repo.reveal."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from iat.commands.common import ProjectRef
from iat.errors import NotFound
from iat.lazy import lazy_import
from iat.registry import Result, command
from iat.secrets.vault import SecretsUnavailable, SecretUndecryptable

repo = lazy_import("iat.secrets.repo")

ProviderCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$"),
                         Field(description="The provider (e.g. openai, comfyui)")]
SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$"),
                       Field(description="The secret's name within the provider (e.g. api_key)")]


class SecretRef(ProjectRef):
    provider_code: ProviderCode
    secret_name: SecretName


class SecretSetParams(SecretRef):
    value: str = Field(min_length=1, max_length=16_384, json_schema_extra={"writeOnly": True},
                       description="The secret itself; stored encrypted, never returned")


class SecretListParams(ProjectRef):
    provider_code: ProviderCode | None = None


class SecretOut(Result):
    id: str
    provider_code: str
    secret_name: str
    kms_key_ref: str | None = Field(description="The master key: keyring:<id> (OS keyring) or scrypt:<salt> "
                                                "(passphrase mode)")
    created_at: datetime
    updated_at: datetime


class SecretList(Result):
    items: list[SecretOut]


class SecretsRotated(Result):
    kms_key_ref: str | None = Field(description="The new key (null when the project has no secrets)")
    secrets: int = Field(description="Secrets re-encrypted")


def _actor(ctx) -> str:
    return ctx.app.current_user()["id"]


@command("secrets.set", params=SecretSetParams, result=SecretOut,
         route=("PUT", "/api/projects/{slug}/secrets/{provider_code}/{secret_name}"), mutating=True,
         errors=(SecretsUnavailable, SecretUndecryptable))
def set_secret(ctx, p: SecretSetParams) -> SecretOut:
    """Stores (or replaces) a secret, encrypted with AES-256-GCM under the project's master key."""
    ctx.app.redactor.add(p.value)
    handle = ctx.app.projects.open(p.slug)
    row = handle.store.write(repo.set_secret, ctx.app.vault, handle.id, _actor(ctx), p.provider_code,
                             p.secret_name, p.value)
    ctx.app.events.publish("secret.set", {"project_id": handle.id, "provider_code": p.provider_code,
                                          "secret_name": p.secret_name})
    return SecretOut.model_validate(row)


@command("secrets.list", params=SecretListParams, result=SecretList, route=("GET", "/api/projects/{slug}/secrets"))
def list_secrets(ctx, p: SecretListParams) -> SecretList:
    """Lists a project's secrets: names, providers, key references and dates, never values."""
    handle = ctx.app.projects.open(p.slug)
    rows = handle.store.read(repo.list_secrets, handle.id, p.provider_code)
    return SecretList(items=[SecretOut.model_validate(r) for r in rows])


@command("secrets.delete", params=SecretRef, result=SecretOut,
         route=("DELETE", "/api/projects/{slug}/secrets/{provider_code}/{secret_name}"), mutating=True,
         errors=(NotFound,))
def delete_secret(ctx, p: SecretRef) -> SecretOut:
    """Deletes a secret; a master key no secret uses any more leaves the keyring."""
    handle = ctx.app.projects.open(p.slug)
    row, unused = handle.store.write(repo.delete_secret, handle.id, _actor(ctx), p.provider_code, p.secret_name)
    for ref in unused:
        ctx.app.vault.retire(ref)
    ctx.app.events.publish("secret.deleted", {"project_id": handle.id, "provider_code": p.provider_code,
                                              "secret_name": p.secret_name})
    return SecretOut.model_validate(row)


@command("secrets.rotate_key", params=ProjectRef, result=SecretsRotated,
         route=("POST", "/api/projects/{slug}/secrets/rotate-key"), mutating=True,
         errors=(SecretsUnavailable, SecretUndecryptable))
def rotate_key(ctx, p: ProjectRef) -> SecretsRotated:
    """Re-encrypts every secret of the project under a new master key in one transaction, then retires the old
    key (a secret is readable under the old key until the commit, under the new one from then)."""
    handle = ctx.app.projects.open(p.slug)
    new_ref, old, count = handle.store.write(repo.rotate, ctx.app.vault, handle.id, _actor(ctx))
    for ref in old:
        ctx.app.vault.retire(ref)
    ctx.app.events.publish("secrets.key_rotated", {"project_id": handle.id, "kms_key_ref": new_ref})
    return SecretsRotated(kms_key_ref=new_ref, secrets=count)
