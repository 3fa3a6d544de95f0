"""project_api_secrets: set, list, delete, rotate the key, reveal. Values go in encrypted and come out only
through reveal(), inside the process; no row this module returns carries a value or its ciphertext."""

from __future__ import annotations

import uuid

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.db.models import ProjectApiSecret
from iat.errors import NotFound
from iat.secrets.vault import Vault

_PUBLIC = (ProjectApiSecret.id, ProjectApiSecret.provider_code, ProjectApiSecret.secret_name,
           ProjectApiSecret.kms_key_ref, ProjectApiSecret.created_at, ProjectApiSecret.updated_at)


def _row(project_id: str, provider_code: str, secret_name: str):
    return (ProjectApiSecret.select()
            .where((ProjectApiSecret.project_id == project_id) & (ProjectApiSecret.provider_code == provider_code)
                   & (ProjectApiSecret.secret_name == secret_name)).dicts().first())


def _refs(project_id: str) -> set[str]:
    return {r["kms_key_ref"] for r in ProjectApiSecret.select(ProjectApiSecret.kms_key_ref)
            .where(ProjectApiSecret.project_id == project_id).dicts()}


def _public(project_id: str, where) -> list[dict]:
    query = (ProjectApiSecret.select(*_PUBLIC).where((ProjectApiSecret.project_id == project_id) & where)
             .order_by(ProjectApiSecret.provider_code, ProjectApiSecret.secret_name))
    return list(query.dicts())


def set_secret(v: Vault, project_id: str, actor: str, provider_code: str, secret_name: str, value: str) -> dict:
    """Inside Store.write: encrypts under the project's current key (a new one when it has none in this mode)."""
    ref = next((r for r in sorted(_refs(project_id)) if v.usable_ref(r)), None)
    created_ref = ref is None
    if created_ref:
        ref = v.new_key_ref()
    try:
        sealed = v.encrypt(value, ref, project_id, provider_code, secret_name)
        now = utcnow()
        existing = _row(project_id, provider_code, secret_name)
        if existing:
            (ProjectApiSecret.update(secret_ciphertext=sealed, kms_key_ref=ref, updated_at=now)
             .where(ProjectApiSecret.id == existing["id"]).execute())
        else:
            ProjectApiSecret.insert(id=str(uuid.uuid4()), project_id=project_id, provider_code=provider_code,
                                    secret_name=secret_name, secret_ciphertext=sealed, kms_key_ref=ref,
                                    created_at=now, updated_at=now).execute()
        audit.record(project_id, actor, "secret.updated" if existing else "secret.created",
                     {"provider_code": provider_code, "secret_name": secret_name, "kms_key_ref": ref})
    except BaseException:
        if created_ref:
            v.retire(ref)
        raise
    return _public(project_id, (ProjectApiSecret.provider_code == provider_code)
                   & (ProjectApiSecret.secret_name == secret_name))[0]


def list_secrets(project_id: str, provider_code: str | None) -> list[dict]:
    where = (ProjectApiSecret.provider_code == provider_code) if provider_code else (ProjectApiSecret.id.is_null(False))
    return _public(project_id, where)


def delete_secret(project_id: str, actor: str, provider_code: str, secret_name: str) -> tuple[dict, set[str]]:
    """Inside Store.write: removes the row; returns it and the key refs no row uses any more (to retire)."""
    row = _row(project_id, provider_code, secret_name)
    if row is None:
        raise NotFound(f"no secret {provider_code}/{secret_name} in this project",
                       details={"provider_code": provider_code, "secret_name": secret_name})
    before = _refs(project_id)
    ProjectApiSecret.delete().where(ProjectApiSecret.id == row["id"]).execute()
    audit.record(project_id, actor, "secret.deleted", {"provider_code": provider_code, "secret_name": secret_name})
    public = {k: row[k] for k in ("id", "provider_code", "secret_name", "kms_key_ref", "created_at", "updated_at")}
    return public, before - _refs(project_id)


def rotate(v: Vault, project_id: str, actor: str) -> tuple[str | None, set[str], int]:
    """Inside Store.write: every secret of the project re-encrypted under a new key in this one transaction.
    The old keys stay until the caller retires them after the commit, so no secret is ever unreadable."""
    rows = list(ProjectApiSecret.select().where(ProjectApiSecret.project_id == project_id).dicts())
    if not rows:
        return None, set(), 0
    plain = [(r, v.decrypt(r["secret_ciphertext"], r["kms_key_ref"], project_id, r["provider_code"],
                           r["secret_name"])) for r in rows]
    new_ref = v.new_key_ref()
    try:
        now = utcnow()
        for r, value in plain:
            sealed = v.encrypt(value, new_ref, project_id, r["provider_code"], r["secret_name"])
            (ProjectApiSecret.update(secret_ciphertext=sealed, kms_key_ref=new_ref, updated_at=now)
             .where(ProjectApiSecret.id == r["id"]).execute())
        old = {r["kms_key_ref"] for r in rows} - {new_ref}
        audit.record(project_id, actor, "secrets.key_rotated",
                     {"kms_key_ref": new_ref, "retired": sorted(old), "secrets": len(rows)})
    except BaseException:
        v.retire(new_ref)
        raise
    return new_ref, old, len(rows)


def reveal(app, handle, provider_code: str, secret_name: str) -> str:
    """The plaintext of one secret, for a connector at the call; registered with the App's redactor so it is
    masked in every log line from now on. `handle` is the project's handle (app.projects.open/lease)."""
    row = handle.store.read(_row, handle.id, provider_code, secret_name)
    if row is None:
        raise NotFound(f"no secret {provider_code}/{secret_name} in this project",
                       details={"provider_code": provider_code, "secret_name": secret_name})
    value = app.vault.decrypt(row["secret_ciphertext"], row["kms_key_ref"], handle.id, provider_code, secret_name)
    app.redactor.add(value)
    return value
