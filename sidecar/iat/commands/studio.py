"""Studio mode (SPEC 4, 7): moving a project onto the studio's shared PostgreSQL, and the studio's catalog.

Creating a studio project is projects.create with backend "postgres"; opening one another workstation made is
projects.attach (iat.commands.projects).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from iat.commands.common import NoParams, ProjectRef
from iat.commands.projects import ProjectOut, _out
from iat.errors import Conflict, DatabaseUnavailable, NotFound
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.projects.repo")


class Moved(Result):
    project: ProjectOut
    db_schema: str = Field(description="The project's schema in the studio database")
    rows: dict[str, int] = Field(description="Rows copied per table")
    files: int = Field(description="Files of the project folder carried over (hash-checked)")
    old_database: str = Field(description="Where the project's former project.db was kept (the trash)")


class StudioProject(Result):
    id: str
    slug: str
    name: str
    created_at: datetime
    attached: bool = Field(description="Whether this workstation has it in its project list")


class StudioProjectList(Result):
    items: list[StudioProject]


@command("projects.move", params=ProjectRef, result=Moved, route=("POST", "/api/projects/{slug}/move"),
         mutating=True, errors=(Conflict, NotFound, DatabaseUnavailable))
def move(ctx, p: ProjectRef) -> Moved:
    """Moves a project from its own project.db onto the studio's shared PostgreSQL database (a schema of its own),
    through the export format: same slug, id, rows and files (every hash checked); other workstations can then
    attach it. Refused (conflict) while it has runs with work left. A failed move leaves it as it was; the old
    project.db goes to the trash once the move has committed."""
    from iat.studio.move import move_to_studio

    handle, info = move_to_studio(ctx.app, p.slug)
    row = handle.store.read(repo.get_project, handle.id)
    ctx.app.events.publish("project.moved", {"project_id": handle.id, "slug": p.slug, "backend": "postgres"})
    return Moved(project=_out(handle, row), **info)


@command("studio.projects.list", params=NoParams, result=StudioProjectList, route=("GET", "/api/studio/projects"),
         errors=(Conflict, DatabaseUnavailable))
def list_studio_projects(ctx, p: NoParams) -> StudioProjectList:
    """Lists the studio's projects (its catalog on the shared database), whether this workstation attached each."""
    from iat.studio import catalog

    url = ctx.app.projects._studio_url()
    here = {e["id"] for e in ctx.app.projects.list(None)}
    return StudioProjectList(items=[StudioProject(id=e["id"], slug=e["slug"], name=e["name"],
                                                  created_at=e["created_at"], attached=e["id"] in here)
                                    for e in catalog.list_all(url)])
