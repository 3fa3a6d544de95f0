"""Params shared by many commands."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from iat.registry import Params, Result

# Lowercase letters, digits and inner hyphens: safe as a folder name on every OS and in a URL path.
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")]


class NoParams(Params):
    pass


class ProjectRef(Params):
    slug: Slug


class PageParams(ProjectRef):
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None


class Page(Result):
    next_cursor: str | None
