"""style_guides.*: a project's style locks (SPEC 2.3, 5.2); one of them is the default a run uses."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from iat.clock import utcnow
from iat.commands.common import Page, PageParams, ProjectRef
from iat.knowledge.rules import StyleRules, normalise
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.knowledge.repo")

_RULES_DOC = ("The guide's rules (StyleRules): palette, max_chroma, lighting per time of day, negative_prompt, "
              "size, stage_defaults, qa. Fields left out take their documented default; unknown fields are refused")


class StyleGuideOut(Result):
    id: str
    project_id: str
    name: str
    description: str
    rules_json: StyleRules
    is_default: bool
    created_at: datetime
    updated_at: datetime


class StyleGuidePage(Page):
    items: list[StyleGuideOut]


class StyleGuideCreate(ProjectRef):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    rules_json: StyleRules = Field(default_factory=StyleRules, description=_RULES_DOC)
    is_default: bool = Field(False, strict=True,
                             description="Make it the default at once (the first guide always is)")


class StyleGuideRef(ProjectRef):
    style_guide_id: uuid.UUID


class StyleGuideUpdate(StyleGuideRef):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    rules_json: StyleRules | None = Field(None, description=_RULES_DOC + ". Replaces the rules as a whole")


def _publish(ctx, event: str, slug: str, row: dict) -> StyleGuideOut:
    ctx.app.events.publish(event, {"project_id": row["project_id"], "slug": slug, "id": row["id"],
                                   "name": row["name"], "is_default": row["is_default"]})
    return StyleGuideOut.model_validate(row)


@command("style_guides.create", params=StyleGuideCreate, result=StyleGuideOut,
         route=("POST", "/api/projects/{slug}/style-guides"), mutating=True)
def create(ctx, p: StyleGuideCreate) -> StyleGuideOut:
    """Adds a style guide with validated rules; the project's first guide (or is_default=true) becomes the default."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.create_style_guide, handle.id, p.name, p.description, normalise(p.rules_json),
                             p.is_default, actor["id"], utcnow())
    return _publish(ctx, "style_guide.created", p.slug, row)


@command("style_guides.list", params=PageParams, result=StyleGuidePage,
         route=("GET", "/api/projects/{slug}/style-guides"))
def list_guides(ctx, p: PageParams) -> StyleGuidePage:
    """Lists the project's style guides newest first; page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_style_guides, handle.id, p.limit, p.cursor)
    return StyleGuidePage(items=items, next_cursor=cursor)


@command("style_guides.get", params=StyleGuideRef, result=StyleGuideOut,
         route=("GET", "/api/projects/{slug}/style-guides/{style_guide_id}"))
def get(ctx, p: StyleGuideRef) -> StyleGuideOut:
    """Returns one style guide of the project."""
    handle = ctx.app.projects.open(p.slug)
    return StyleGuideOut.model_validate(handle.store.read(repo.get_style_guide, handle.id, str(p.style_guide_id)))


@command("style_guides.update", params=StyleGuideUpdate, result=StyleGuideOut,
         route=("PATCH", "/api/projects/{slug}/style-guides/{style_guide_id}"), mutating=True)
def update(ctx, p: StyleGuideUpdate) -> StyleGuideOut:
    """Changes a guide's name, description or rules (only the fields given; rules_json replaces all rules)."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    changes = {k: getattr(p, k) for k in ("name", "description") if getattr(p, k) is not None}
    if p.rules_json is not None:
        changes["rules_json"] = normalise(p.rules_json)
    row = handle.store.write(repo.update_style_guide, handle.id, str(p.style_guide_id), changes, actor["id"],
                             utcnow())
    return _publish(ctx, "style_guide.updated", p.slug, row)


@command("style_guides.set_default", params=StyleGuideRef, result=StyleGuideOut,
         route=("POST", "/api/projects/{slug}/style-guides/{style_guide_id}/default"), mutating=True)
def set_default(ctx, p: StyleGuideRef) -> StyleGuideOut:
    """Makes a guide the project's default; the previous default stops being one in the same transaction."""
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.set_default_style_guide, handle.id, str(p.style_guide_id), actor["id"], utcnow())
    return _publish(ctx, "style_guide.default_set", p.slug, row)
