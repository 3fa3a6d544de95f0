"""Project rows (SPEC 5.1 projects, project_storage): run inside Store.read / Store.write, always by project_id.

These functions are the same on a project's own SQLite file and on a shared PostgreSQL database.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from iat.audit import repo as audit
from iat.db.models import AppUser, Project, ProjectStorage
from iat.errors import Conflict, NotFound

STORAGE_FIELDS = ("local_base_dir", "local_project_root", "s3_enabled", "s3_bucket", "s3_prefix", "s3_region",
                  "s3_profile", "s3_endpoint_url")


def create_project(owner: dict, project: dict, storage: dict, now: datetime) -> dict:
    """Inserts the project, its storage policy and its audit event; the owner row is copied in as FK target."""
    AppUser.insert(**owner).on_conflict_ignore().execute()
    clash = Project.select().where((Project.owner_user_id == owner["id"]) & (Project.slug == project["slug"]))
    if clash.exists():
        raise Conflict(f"project {project['slug']!r} already exists", details={"slug": project["slug"]})
    Project.insert(**project, owner_user_id=owner["id"], status="active", created_at=now, updated_at=now).execute()
    ProjectStorage.insert(id=str(uuid.uuid4()), project_id=project["id"], created_at=now, updated_at=now,
                          **storage).execute()
    audit.record(project["id"], owner["id"], "project.created", {"slug": project["slug"], "name": project["name"]})
    return get_project(project["id"])


def get_project(project_id: str) -> dict:
    row = Project.select().where(Project.id == project_id).dicts().first()
    if row is None:
        raise NotFound(f"project {project_id} not found", details={"project_id": project_id})
    return row


def update_project(project_id: str, changes: dict, actor_id: str, event_code: str, now: datetime) -> dict:
    """Applies `changes` (already validated) and records `event_code` with what changed."""
    before = get_project(project_id)
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if changed:
        Project.update(**changed, updated_at=now).where(Project.id == project_id).execute()
    audit.record(project_id, actor_id, event_code, {"changed": sorted(changed)})
    return get_project(project_id)


def get_storage(project_id: str) -> dict:
    row = ProjectStorage.select().where(ProjectStorage.project_id == project_id).dicts().first()
    if row is None:
        raise NotFound(f"storage policy of project {project_id} not found", details={"project_id": project_id})
    return row


def update_storage(project_id: str, changes: dict, actor_id: str, now: datetime) -> dict:
    before = get_storage(project_id)
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if changed:
        ProjectStorage.update(**changed, updated_at=now).where(ProjectStorage.project_id == project_id).execute()
    audit.record(project_id, actor_id, "storage.updated", {"changed": sorted(changed)})
    return get_storage(project_id)
