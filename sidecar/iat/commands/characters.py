"""characters.*: stable character identities of a project (SPEC 2.3, 5.2), named by an immutable code."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from iat.clock import utcnow
from iat.commands.common import Page, PageParams, ProjectRef
from iat.knowledge.identity import CharacterCode, IdentityConstraints
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.knowledge.repo")


class CharacterOut(Result):
    id: str
    project_id: str
    code: str
    name: str
    bio: str
    identity_constraints_json: IdentityConstraints
    created_at: datetime
    updated_at: datetime


class CharacterPage(Page):
    items: list[CharacterOut]


class CharacterCreate(ProjectRef):
    code: CharacterCode
    name: str = Field(min_length=1, max_length=200)
    bio: str = Field("", max_length=10_000)
    identity_constraints_json: IdentityConstraints = Field(
        default_factory=IdentityConstraints,
        description="appearance, palette, outfit, reference_set_id (a reference set of this project)")


class CharacterRef(ProjectRef):
    character_id: uuid.UUID


class CharacterUpdate(CharacterRef):
    name: str | None = Field(None, min_length=1, max_length=200)
    bio: str | None = Field(None, max_length=10_000)
    identity_constraints_json: IdentityConstraints | None = Field(
        None, description="Replaces the identity constraints as a whole")

    @model_validator(mode="before")
    @classmethod
    def _code_is_immutable(cls, data: Any) -> Any:
        if isinstance(data, dict) and "code" in data:
            raise ValueError("a character's code is immutable after creation (shot lists and templates name it)")
        return data


def _publish(ctx, event: str, slug: str, row: dict) -> CharacterOut:
    ctx.app.events.publish(event, {"project_id": row["project_id"], "slug": slug, "id": row["id"],
                                   "code": row["code"], "name": row["name"]})
    return CharacterOut.model_validate(row)


@command("characters.create", params=CharacterCreate, result=CharacterOut,
         route=("POST", "/api/projects/{slug}/characters"), mutating=True)
def create(ctx, p: CharacterCreate) -> CharacterOut:
    """Adds a character; its code is unique in the project (conflict otherwise) and never changes."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.create_character, handle.id, p.code, p.name, p.bio,
                             p.identity_constraints_json.stored(), actor["id"], utcnow())
    return _publish(ctx, "character.created", p.slug, row)


@command("characters.list", params=PageParams, result=CharacterPage,
         route=("GET", "/api/projects/{slug}/characters"))
def list_characters(ctx, p: PageParams) -> CharacterPage:
    """Lists the project's characters newest first; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_characters, handle.id, p.limit, p.cursor)
    return CharacterPage(items=items, next_cursor=cursor)


@command("characters.get", params=CharacterRef, result=CharacterOut,
         route=("GET", "/api/projects/{slug}/characters/{character_id}"))
def get(ctx, p: CharacterRef) -> CharacterOut:
    """Returns one character of the project."""
    handle = ctx.app.projects.open(p.slug)
    return CharacterOut.model_validate(handle.store.read(repo.get_character, handle.id, str(p.character_id)))


@command("characters.update", params=CharacterUpdate, result=CharacterOut,
         route=("PATCH", "/api/projects/{slug}/characters/{character_id}"), mutating=True)
def update(ctx, p: CharacterUpdate) -> CharacterOut:
    """Changes a character's name, bio or identity constraints (only the fields given); the code cannot change."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    changes = {k: getattr(p, k) for k in ("name", "bio") if getattr(p, k) is not None}
    if p.identity_constraints_json is not None:
        changes["identity_constraints_json"] = p.identity_constraints_json.stored()
    row = handle.store.write(repo.update_character, handle.id, str(p.character_id), changes, actor["id"], utcnow())
    return _publish(ctx, "character.updated", p.slug, row)
