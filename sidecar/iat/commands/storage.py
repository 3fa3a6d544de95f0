"""storage.*: a project's storage policy (local folder, optional S3 mirror)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from iat.clock import utcnow
from iat.commands.common import ProjectRef, ProjectRoot
from iat.errors import (Conflict, NotFound, ProviderAuthFailed, ProviderBadRequest, ProviderError, ProviderTimeout,
                        ProviderUnavailable)
from iat.lazy import lazy_import
from iat.registry import Result, command
from iat.storage.policy import S3Bucket, S3EndpointUrl, S3Prefix, S3Region

repo = lazy_import("iat.projects.repo")
policy = lazy_import("iat.storage.policy")
s3sync = lazy_import("iat.sync.s3")


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


def _enabling_needs_a_bucket(schema: dict) -> None:
    # The request-level half of "S3 on needs a bucket", as JSON Schema: s3_enabled=true with s3_bucket=null.
    schema["if"] = {"properties": {"s3_enabled": {"const": True}}, "required": ["s3_enabled"]}
    schema["then"] = {"properties": {"s3_bucket": {"type": "string"}}}


class SetParams(ProjectRef):
    """Fields left out keep their value; null clears an optional one. A change that leaves the stored policy
    unusable (S3 on without a bucket) is a conflict with what is stored."""

    model_config = ConfigDict(json_schema_extra=_enabling_needs_a_bucket)

    local_project_root: ProjectRoot | None = None
    s3_enabled: bool | None = Field(None, strict=True)
    s3_bucket: S3Bucket | None = None
    s3_prefix: S3Prefix | None = None
    s3_region: S3Region | None = None
    s3_profile: str | None = Field(None, max_length=128)
    s3_endpoint_url: S3EndpointUrl | None = None

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> SetParams:
        if self.s3_enabled and "s3_bucket" in self.model_fields_set and self.s3_bucket is None:
            raise ValueError("s3_enabled=true needs an S3 bucket; this request clears it")
        return self


@command("storage.get", params=ProjectRef, result=StorageOut, route=("GET", "/api/projects/{slug}/storage"))
def get(ctx, p: ProjectRef) -> StorageOut:
    """Returns the project's storage policy."""
    handle = ctx.app.projects.open(p.slug)
    return StorageOut.model_validate(handle.store.read(repo.get_storage, handle.id))


@command("storage.set", params=SetParams, result=StorageOut, route=("PUT", "/api/projects/{slug}/storage"),
         mutating=True, errors=(Conflict,))
def set_policy(ctx, p: SetParams) -> StorageOut:
    """Changes the project's storage policy; the result must be usable (S3 on needs a bucket, and so on)."""
    handle = ctx.app.projects.open(p.slug)
    changes = {k: getattr(p, k) for k in p.model_fields_set if k != "slug"}
    current = handle.store.read(repo.get_storage, handle.id)
    if "local_project_root" in changes:
        wanted = changes.pop("local_project_root")
        if _resolved(ctx, p.slug, wanted) != handle.root:
            raise Conflict("a project's folder is fixed at creation; export it and create it anew elsewhere",
                           details={"local_project_root": str(handle.root)})
    if changes.get("s3_enabled") is None:
        changes.pop("s3_enabled", None)  # null means "leave as is" for a flag that cannot be null
    changes = {k: v for k, v in changes.items() if v != current.get(k)}
    if not changes:
        return StorageOut.model_validate(current)  # nothing to change: nothing written, nothing audited
    found = policy.problems({**current, **changes})
    if found:
        raise Conflict(f"the storage policy would be unusable: {found[0]['loc'][0]}: {found[0]['msg']}",
                       details={"errors": found})
    row = handle.store.write(repo.update_storage, handle.id, changes, ctx.app.current_user()["id"], utcnow())
    ctx.app.events.publish("storage.updated", {"project_id": handle.id, "slug": p.slug})
    return StorageOut.model_validate(row)


def _resolved(ctx, slug: str, root: str | None):
    try:
        return ctx.app.projects.resolve_root(slug, root)
    except (OSError, RuntimeError):  # a path the OS cannot resolve (too long, a symlink loop) is not this folder
        return None


# A project file or folder, relative to the project root with "/": no empty, "." or ".." segment, no backslash.
RelPath = Annotated[str, StringConstraints(min_length=1, max_length=1024,
                                           pattern=r"^(?:[^/\\\x00.][^/\\\x00]*/)*[^/\\\x00.][^/\\\x00]*/?$"),
                    Field(description="A project file or folder relative to the project root (e.g. assets/3f or "
                                      "runs/<id>)")]


class SyncParams(ProjectRef):
    direction: Literal["push", "pull"] = Field("push", description="push: local to S3; pull: S3 to local")
    dry_run: bool = Field(False, description="List what would change; change nothing (still audited, marked so)")
    delete_remote: bool = Field(False, description="Push only: remote objects under the prefix with no local file "
                                                   "are listed for deletion (ignored on pull)")
    confirm_delete: bool = Field(False, description="With delete_remote: delete them; without it they are only "
                                                    "listed (delete_pending)")
    paths: list[RelPath] | None = Field(None, min_length=1, max_length=1000,
                                        description="Only these files or folders (default: the whole project)")


class SyncItem(Result):
    path: str
    action: str = Field(description="upload | download | delete | delete_pending | conflict | failed | refused")
    size_bytes: int | None
    reason: str | None


class SyncOut(Result):
    project_id: str
    slug: str
    direction: str
    dry_run: bool
    status: str = Field(description="done | partial (some transfers failed; rerun to resume) | planned (dry run)")
    trigger: str
    bucket: str
    prefix: str
    credentials: str = Field(description="Where the credentials came from: profile | secrets | default")
    uploaded: int
    downloaded: int
    skipped: int = Field(description="Files the mirror already holds with the same sha256")
    deleted: int
    failed: int
    conflicts: int = Field(description="Local files that differ from the remote object: never overwritten")
    refused: int = Field(description="Remote keys that name no project file (e.g. '..', project.db): left alone")
    delete_pending: int = Field(description="Remote-only objects that would be deleted with confirm_delete")
    uploaded_bytes: int
    downloaded_bytes: int
    deleted_bytes: int
    failed_bytes: int
    seconds: float
    items: list[SyncItem] = Field(description="What changed or would change (at most 1000; skips not listed)")
    items_truncated: bool


@command("storage.sync", params=SyncParams, result=SyncOut, route=("POST", "/api/projects/{slug}/storage/sync"),
         mutating=True, errors=(Conflict, NotFound, ProviderAuthFailed, ProviderBadRequest, ProviderUnavailable,
                                ProviderTimeout, ProviderError))
def sync(ctx, p: SyncParams) -> SyncOut:
    """Syncs the project's files with its S3 mirror, incrementally by sha256: push uploads what the mirror lacks
    or holds differently, pull downloads what is missing or newer locally (a local file that differs otherwise
    is a conflict, never overwritten). Nothing is deleted remotely without delete_remote and confirm_delete.
    Progress comes as `storage.sync.progress` events, the end as `storage.synced`; every sync is audited."""
    with ctx.app.projects.lease(p.slug) as handle:
        opts = s3sync.Options(p.direction, dry_run=p.dry_run, delete_remote=p.delete_remote and p.direction == "push",
                              confirm_delete=p.confirm_delete, paths=p.paths)
        return SyncOut.model_validate(s3sync.sync(ctx.app, handle, opts, actor_id=ctx.app.current_user()["id"]))
