"""storage.*: a project's storage policy (local folder, optional S3 mirror)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from iat.clock import utcnow
from iat.commands.common import ProjectRef
from iat.errors import Conflict
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.projects.repo")
policy = lazy_import("iat.storage.policy")


class StorageOut(Result):
    project_id: str
    local_base_dir: str
    local_project_root: str | None
    s3_enabled: bool
    s3_bucket: str | None
    s3_prefix: str | None
    s3_region: str | None
    s3_profile: str | None
    s3_endpoint_url: str | None
    created_at: datetime
    updated_at: datetime


class SetParams(ProjectRef):
    """Fields left out keep their value; null clears an optional one."""

    local_project_root: str | None = None
    s3_enabled: bool | None = None
    s3_bucket: str | None = Field(None, max_length=63)
    s3_prefix: str | None = Field(None, max_length=512)
    s3_region: str | None = Field(None, max_length=32)
    s3_profile: str | None = Field(None, max_length=128)
    s3_endpoint_url: str | None = Field(None, max_length=2048)


@command("storage.get", params=ProjectRef, result=StorageOut, route=("GET", "/api/projects/{slug}/storage"))
def get(ctx, p: ProjectRef) -> StorageOut:
    """Returns the project's storage policy."""
    handle = ctx.app.projects.open(p.slug)
    return StorageOut.model_validate(handle.store.read(repo.get_storage, handle.id))


@command("storage.set", params=SetParams, result=StorageOut, route=("PUT", "/api/projects/{slug}/storage"),
         mutating=True)
def set_policy(ctx, p: SetParams) -> StorageOut:
    """Changes the project's storage policy; the result must be usable (S3 on needs a bucket, and so on)."""
    handle = ctx.app.projects.open(p.slug)
    changes = {k: getattr(p, k) for k in p.model_fields_set if k != "slug"}
    current = handle.store.read(repo.get_storage, handle.id)
    if "local_project_root" in changes:
        wanted = ctx.app.projects.resolve_root(p.slug, changes.pop("local_project_root"))
        if wanted != handle.root:
            raise Conflict("a project's folder is fixed at creation; export it and create it anew elsewhere",
                           details={"local_project_root": str(handle.root)})
    if changes.get("s3_enabled") is None:
        changes.pop("s3_enabled", None)  # null means "leave as is" for a flag that cannot be null
    policy.validate({**current, **changes})
    row = handle.store.write(repo.update_storage, handle.id, changes, ctx.app.current_user()["id"], utcnow())
    ctx.app.events.publish("storage.updated", {"project_id": handle.id, "slug": p.slug})
    return StorageOut.model_validate(row)
