"""Params shared by many commands.

Constraints live in the types (patterns, lengths), so pydantic enforces exactly what the OpenAPI document states.
Patterns avoid look-around: the JSON Schema, pydantic's regex engine and the fuzzers' generators all read them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, StringConstraints

from iat.errors import Conflict, IATError, NotFound, SchemaVersionError
from iat.pagination import CURSOR_PATTERN
from iat.registry import Params, Result
from iat.rpc.openapi import PARTS_KEY

# Lowercase letters, digits and inner hyphens: safe as a folder name on every OS and in a URL path.
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")]

# A page position handed out as next_cursor (see iat.pagination).
Cursor = Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)]

# An absolute folder on this OS: a relative one would depend on the sidecar's working directory. No NUL (no OS
# takes it) and at most 255 characters per name (the usual file system limit). The document generated on Linux or
# macOS states the POSIX form, the one on Windows the drive and UNC forms.
_NAMES = r"(?:[^\\/\x00]{1,255}[\\/]+)*(?:[^\\/\x00]{1,255})?$"
_ABSOLUTE = (r"^(?:[A-Za-z]:[\\/]|[\\/]{2}[^\\/\x00]+[\\/][^\\/\x00]+(?:[\\/]|$))[\\/]*" + _NAMES
             if os.name == "nt" else r"^/+(?:[^/\x00]{1,255}/+)*(?:[^/\x00]{1,255})?$")


_ABSOLUTE_RE = re.compile(_ABSOLUTE)


def _absolute(value: str) -> str:
    # The pattern is checked here rather than by StringConstraints so that a refusal says why in words.
    if _ABSOLUTE_RE.fullmatch(value) and Path(value).is_absolute():
        return value
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    if not Path(value).is_absolute():
        raise ValueError("must be an absolute path (a relative one would depend on the sidecar's working folder)")
    raise ValueError("a name in the path is longer than 255 characters")


AbsolutePath = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_absolute),
                         Field(json_schema_extra={"pattern": _ABSOLUTE})]
ProjectRoot = Annotated[AbsolutePath,
                        Field(description="Absolute folder of the project (any place, also outside the data home)")]


# A background-removal engine's code: the document lists the App's codes (iat.rpc.openapi fills the enum), and
# whoever uses one checks it against the App's engine registry.
BackgroundEngine = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$"),
                             Field(json_schema_extra={PARTS_KEY: "engine:remove_background"})]
# An upscale engine's code, or "auto": onnx_sr when a super-resolution model suits the factor, else lanczos.
UpscaleEngine = Literal["auto"] | Annotated[str, StringConstraints(min_length=1, max_length=64,
                                                                   pattern=r"^[a-z0-9_]+$"),
                                            Field(json_schema_extra={PARTS_KEY: "engine:upscale"})]


class NoParams(Params):
    pass


class ProjectRef(Params):
    # What looking the project up can answer besides success: an unknown slug, or a folder that holds another
    # project or a database of a newer schema. The OpenAPI document declares these for every command using it.
    lookup_errors: ClassVar[tuple[type[IATError], ...]] = (NotFound, Conflict, SchemaVersionError)

    slug: Slug


class PageParams(ProjectRef):
    limit: int = Field(50, ge=1, le=500)
    cursor: Cursor | None = None


class Page(Result):
    next_cursor: str | None


def exactly_one_of(*names: str) -> dict:
    """JSON Schema saying "exactly one of `names` is given", a null counting as not given (for a params model's
    `json_schema_extra`; the model checks the same with `require_exactly_one`)."""
    return {"oneOf": [{"required": [name],
                       "properties": {other: {"not": {"type": "null"}} if other == name else {"type": "null"}
                                      for other in names}}
                      for name in names]}


def require_exactly_one(model: Params, *names: str) -> None:
    """ValueError (invalid_params) unless exactly one of the fields `names` is set (not None)."""
    given = [name for name in names if getattr(model, name) is not None]
    if len(given) != 1:
        problem = "neither was given" if not given else "not both" if len(names) == 2 else f"not {len(given)}"
        raise ValueError(f"give exactly one of {' and '.join(names)}, {problem}")
