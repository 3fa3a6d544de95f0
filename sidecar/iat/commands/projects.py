"""projects.*: create, list, read, update, archive and delete projects (SPEC 2.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from iat.commands.common import AbsolutePath, BackgroundEngine, ProjectRef, ProjectRoot, Slug
from iat.errors import ConfirmationRequired, Conflict, DatabaseUnavailable, InvalidParams, NotFound
from iat.lazy import lazy_import
from iat.registry import Params, Result, command

repo = lazy_import("iat.projects.repo")

class ProjectOut(Result):
    id: str
    owner_user_id: str
    slug: str
    name: str
    description: str
    status: Literal["active", "archived", "deleted"]
    settings_json: dict
    root_dir: str
    backend: Literal["sqlite", "postgres"] = Field(description="sqlite: the project's own project.db; postgres: a "
                                                               "studio project on the shared database")
    created_at: datetime
    updated_at: datetime


class ProjectSummary(Result):
    id: str
    slug: str
    name: str
    status: Literal["active", "archived", "deleted"]
    root_dir: str
    backend: Literal["sqlite", "postgres"]
    created_at: datetime
    updated_at: datetime


class ProjectList(Result):
    items: list[ProjectSummary]


class ProjectSettings(BaseModel):
    """A project's settings_json: the keys the sidecar reads are typed here; any other key is the client's own,
    kept as given."""

    model_config = ConfigDict(extra="allow")

    import_roots: list[AbsolutePath] | None = Field(
        None, max_length=64, description="Folders assets.import may read from (default: the user's home folder and "
                                         "the project folder)")
    background_engines: list[BackgroundEngine] | None = Field(
        None, min_length=1, max_length=8, description="Background-removal engines in order, the default of runs "
                                                      "and images.remove_background (default [\"key\"])")
    budget_usd: float | None = Field(
        None, ge=0, le=1e9, strict=True, description="What the project's provider calls may cost in all (USD): a run whose "
                                        "estimate exceeds what is left needs confirm_budget, and calls stop once it "
                                        "is spent (default: no budget)")
    s3_sync_after_run: bool | None = Field(
        None, strict=True, description="Push each run's new files to the project's S3 mirror when the run ends "
                                       "(needs S3 enabled in the storage policy; default: off)")


def _settings(ctx, settings: ProjectSettings | None) -> dict | None:
    """settings_json as stored: as given (unset keys stay absent); engine codes the App does not have refused."""
    if settings is None:
        return None
    for code in settings.background_engines or ():
        if code not in ctx.app.engines or getattr(ctx.app.engines.get(code), "op", None) != "remove_background":
            raise InvalidParams(f"unknown background-removal engine {code!r}", details={"errors": [
                {"loc": ["settings_json", "background_engines"], "msg": "unknown engine", "type": "enum"}]})
    return settings.model_dump(mode="json", exclude_unset=True)


class CreateParams(Params):
    slug: Slug
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    settings_json: ProjectSettings = Field(default_factory=ProjectSettings)
    local_project_root: ProjectRoot | None = Field(None, description="Absolute folder of the project (empty or "
                                                   "new; also outside the data home); default <home>/projects/<slug>")
    backend: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="Where the project's rows live: its own project.db in the folder, or (studio mode) a "
                              "schema of its own in the studio's shared PostgreSQL database (IAT_STUDIO_DATABASE_URL)")


class AttachParams(Params):
    slug: Slug
    local_project_root: ProjectRoot | None = Field(None, description="Absolute folder for this workstation's copy of "
                                                   "the project's files; default <home>/projects/<slug>")


class ListParams(Params):
    status: Literal["active", "archived"] | None = None


class UpdateParams(ProjectRef):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    settings_json: ProjectSettings | None = Field(None, description="Replaces the settings as a whole")


def _confirm_required(schema: dict) -> None:
    # The document asks for confirm=true; without it the handler answers 428 confirmation_required (not 422), so
    # that a client can ask its user and repeat the call.
    schema["properties"]["confirm"] = {"type": "boolean", "const": True, "title": "Confirm",
                                       "description": "Must be true: deletion is destructive (otherwise 428 "
                                                      "confirmation_required)"}
    schema["required"] = [*schema.get("required", []), "confirm"]


class DeleteParams(ProjectRef):
    model_config = ConfigDict(json_schema_extra=_confirm_required)

    confirm: bool = False
    purge: bool = Field(False, description="Remove the folder instead of moving it to the trash")


class Deleted(Result):
    id: str
    slug: str
    trash_dir: str | None


def _out(handle, row: dict) -> ProjectOut:
    return ProjectOut.model_validate({**row, "root_dir": str(handle.root), "backend": handle.backend})


def _change(ctx, slug: str, changes: dict, event: str) -> ProjectOut:
    handle, row = ctx.app.projects.update(slug, changes, ctx.app.current_user()["id"], event)
    ctx.app.events.publish(event, {"project_id": handle.id, "slug": slug})
    return _out(handle, row)


@command("projects.create", params=CreateParams, result=ProjectOut, route=("POST", "/api/projects"), mutating=True,
         errors=(Conflict, DatabaseUnavailable))
def create(ctx, p: CreateParams) -> ProjectOut:
    """Creates a project: its folder, its own project.db with the canonical schema, and its storage policy."""
    try:
        handle = ctx.app.projects.create(p.slug, p.name, p.description, _settings(ctx, p.settings_json),
                                         p.local_project_root, backend=p.backend)
    except OSError as exc:
        if p.local_project_root is None:
            raise  # the data home itself fails: a fault of this machine, not of the request
        # The folder asked for cannot be made (no permission, a read-only disk, a file in the way, a name too
        # long for the file system): the request conflicts with that place as it is.
        raise Conflict(f"cannot create the project folder at {p.local_project_root}: {exc.strerror or exc}",
                       details={"local_project_root": p.local_project_root, "errno": exc.errno}) from None
    row = handle.store.read(repo.get_project, handle.id)
    ctx.app.events.publish("project.created", {"project_id": handle.id, "slug": p.slug, "name": p.name})
    return _out(handle, row)


@command("projects.list", params=ListParams, result=ProjectList, route=("GET", "/api/projects"))
def list_projects(ctx, p: ListParams) -> ProjectList:
    """Lists the current user's projects (active and archived; filter with status)."""
    rows = ctx.app.projects.list(p.status)
    return ProjectList(items=[ProjectSummary.model_validate(r) for r in rows])


@command("projects.attach", params=AttachParams, result=ProjectOut, route=("POST", "/api/studio/projects/{slug}/attach"),
         mutating=True, errors=(Conflict, NotFound, DatabaseUnavailable))
def attach(ctx, p: AttachParams) -> ProjectOut:
    """Opens a studio project (on the shared PostgreSQL database) that another workstation made, so this sidecar
    works on it too: its runs, assets and events are shared; its files are this workstation's copy (S3 mirrors
    them)."""
    handle = ctx.app.projects.attach(p.slug, p.local_project_root)
    row = handle.store.read(repo.get_project, handle.id)
    ctx.app.events.publish("project.attached", {"project_id": handle.id, "slug": p.slug})
    return _out(handle, row)


@command("projects.get", params=ProjectRef, result=ProjectOut, route=("GET", "/api/projects/{slug}"))
def get(ctx, p: ProjectRef) -> ProjectOut:
    """Returns one project by slug."""
    handle = ctx.app.projects.open(p.slug)
    return _out(handle, handle.store.read(repo.get_project, handle.id))


@command("projects.update", params=UpdateParams, result=ProjectOut, route=("PATCH", "/api/projects/{slug}"),
         mutating=True)
def update(ctx, p: UpdateParams) -> ProjectOut:
    """Changes a project's name, description or settings (only the fields given)."""
    changes = p.model_dump(exclude={"slug", "settings_json"}, exclude_none=True)
    if p.settings_json is not None:
        changes["settings_json"] = _settings(ctx, p.settings_json)
    if not changes:  # an empty patch changes nothing: no write, no audit row, no event
        handle = ctx.app.projects.open(p.slug)
        return _out(handle, handle.store.read(repo.get_project, handle.id))
    out = _change(ctx, p.slug, changes, "project.updated")
    if "settings_json" in changes:
        ctx.app.ledger.settings_changed(out.id)  # a new budget holds from the next provider call on
    return out


@command("projects.archive", params=ProjectRef, result=ProjectOut, route=("POST", "/api/projects/{slug}/archive"),
         mutating=True)
def archive(ctx, p: ProjectRef) -> ProjectOut:
    """Archives a project: it stays readable and can be restored with projects.unarchive."""
    return _change(ctx, p.slug, {"status": "archived"}, "project.archived")


@command("projects.unarchive", params=ProjectRef, result=ProjectOut,
         route=("POST", "/api/projects/{slug}/unarchive"), mutating=True)
def unarchive(ctx, p: ProjectRef) -> ProjectOut:
    """Makes an archived project active again."""
    return _change(ctx, p.slug, {"status": "active"}, "project.unarchived")


@command("projects.delete", params=DeleteParams, result=Deleted, route=("DELETE", "/api/projects/{slug}"),
         mutating=True, errors=(ConfirmationRequired,))
def delete(ctx, p: DeleteParams) -> Deleted:
    """Deletes a project (needs confirm=true): its folder goes to the trash, or is removed with purge=true."""
    if not p.confirm:
        ctx.app.projects.open(p.slug)  # an unknown slug is not_found, not a confirmation question
        raise ConfirmationRequired(f"deleting project {p.slug!r} is destructive; repeat with confirm=true",
                                   details={"slug": p.slug, "confirm_with": {"confirm": True}})
    result = ctx.app.projects.delete(p.slug, purge=p.purge)
    ctx.app.events.publish("project.deleted", {"project_id": result["id"], "slug": p.slug})
    return Deleted(**result)
