"""prompt_templates.*: versioned prompt templates per stage (SPEC 2.3, 5.5); a version is never rewritten."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from iat.clock import utcnow
from iat.commands.common import Page, PageParams, ProjectRef
from iat.knowledge import templates
from iat.knowledge.rules import Stage
from iat.lazy import lazy_import
from iat.registry import Result, command

repo = lazy_import("iat.knowledge.repo")

TemplateName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$"),
                         Field(description="Template family name (a run picks its templates by name; 'default' "
                                           "falls back to the embedded ones)", examples=["default"])]


class PromptTemplateOut(Result):
    id: str
    project_id: str
    name: str
    stage: Stage
    template_text: str
    version: int
    is_active: bool
    created_at: datetime


class PromptTemplatePage(Page):
    items: list[PromptTemplateOut]


class PromptTemplateCreate(ProjectRef):
    name: TemplateName
    stage: Stage
    template_text: str = Field(
        min_length=1, max_length=templates.MAX_TEMPLATE_CHARS,
        json_schema_extra={"pattern": templates.TEMPLATE_PATTERN},
        description="Text with named placeholders; see the placeholder list in the command's description")


class PromptTemplateListParams(PageParams):
    stage: Stage | None = None
    name: TemplateName | None = None
    active_only: bool = Field(False, description="Only the active version of each (name, stage)")


def _with_placeholder_list(fn):
    """Appends the placeholder list to a command's description, from the one list the code checks against."""
    lines = [f"        {{{k}}}: {v}" for k, v in templates.PLACEHOLDERS.items()]
    lines += [f"        {{character.<code>.{k}}}: {v}" for k, v in templates.CHARACTER_FIELDS.items()]
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n\n" + "\n".join(lines) + "\n"
    return fn


@command("prompt_templates.create", params=PromptTemplateCreate, result=PromptTemplateOut,
         route=("POST", "/api/projects/{slug}/prompt-templates"), mutating=True)
@_with_placeholder_list
def create(ctx, p: PromptTemplateCreate) -> PromptTemplateOut:
    """Adds a version of a template (version = previous + 1 for its name and stage) and deactivates the previous one.

    An unknown placeholder or a stray brace is invalid_params naming it; a {character.<code>...} placeholder whose
    code is not a character of the project is not_found. Literal braces are written {{ and }}. Placeholders:
    """
    templates.validate(p.template_text, p.stage, p.name)  # the syntax, before the database is touched
    handle = ctx.app.projects.open(p.slug)
    actor = ctx.app.current_user()
    row = handle.store.write(repo.create_prompt_template, handle.id, p.name, p.stage, p.template_text, actor["id"],
                             utcnow())
    ctx.app.events.publish("prompt_template.created", {"project_id": handle.id, "slug": p.slug, "id": row["id"],
                                                        "name": row["name"], "stage": row["stage"],
                                                        "version": row["version"]})
    return PromptTemplateOut.model_validate(row)


@command("prompt_templates.list", params=PromptTemplateListParams, result=PromptTemplatePage,
         route=("GET", "/api/projects/{slug}/prompt-templates"))
def list_templates(ctx, p: PromptTemplateListParams) -> PromptTemplatePage:
    """Lists template versions newest first, optionally of one stage or name, or only the active ones."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_prompt_templates, handle.id, p.stage, p.name, p.active_only,
                                      p.limit, p.cursor)
    return PromptTemplatePage(items=items, next_cursor=cursor)
