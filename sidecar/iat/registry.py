"""The one command registry every transport serves.

A command is declared once, next to its handler:

    @command("projects.get", params=ProjectRef, result=ProjectOut, route=("GET", "/api/projects/{slug}"))
    def get_project(ctx: CallContext, p: ProjectRef) -> ProjectOut:
        '''Returns one project by slug.'''

The declaration is the JSON-RPC method, the REST route, the OpenAPI operation and the JSON Schemas. A duplicate
name fails at import. Declarations are facts of the code (like class definitions); each App builds its own
`Registry` from them with `load_commands()`, so an App (a test) can add commands without touching another's.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from iat.context import CallContext

# Modules holding commands; each is imported once by load_commands().
COMMAND_MODULES = (
    "iat.commands.system",
    "iat.commands.users",
    "iat.commands.projects",
    "iat.commands.studio",
    "iat.commands.storage",
    "iat.commands.exports",
    "iat.commands.audit",
    "iat.commands.assets",
    "iat.commands.style_guides",
    "iat.commands.reference_sets",
    "iat.commands.characters",
    "iat.commands.prompt_templates",
    "iat.commands.runs",
    "iat.commands.run_outputs",
    "iat.commands.images",
    "iat.commands.quality",
    "iat.commands.secrets",
    "iat.commands.providers",
    "iat.commands.costs",
    "iat.commands.models",
    "iat.commands.agent",
    "iat.commands.chat",
    "iat.commands.agent_callbacks",
    "iat.commands.voice",
)


class Params(BaseModel):
    """Base of every params model: unknown fields are errors, validators are built on first use (fast start)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class Result(BaseModel):
    model_config = ConfigDict(defer_build=True)


@dataclass(frozen=True)
class Route:
    method: str  # GET | POST | PUT | PATCH | DELETE
    path: str  # aiohttp pattern, e.g. /api/projects/{slug}

    @property
    def path_params(self) -> tuple[str, ...]:
        import re

        return tuple(re.findall(r"{(\w+)}", self.path))


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[..., Any]
    params: type[Params]
    result: type[BaseModel]
    doc: str
    route: Route | None
    # Commands that change state; every one of them writes an audit event (checked by a guard test).
    mutating: bool
    # Error classes (iat.errors) the handler raises itself; the OpenAPI document declares their HTTP statuses.
    errors: tuple[type[Exception], ...] = ()
    # Who may call it over HTTP: "app" (the sidecar's token, every route) or "instruction" (an external agent's
    # callback: the route lets any bearer through to the handler, which checks the instruction's own token).
    auth: str = "app"

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""


class Registry:
    def __init__(self, commands: list[Command] | None = None) -> None:
        self._commands: dict[str, Command] = {}
        for cmd in commands or ():
            self.add(cmd)

    def add(self, cmd: Command) -> None:
        _check_unique(cmd, self._commands.values())
        self._commands[cmd.name] = cmd

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __iter__(self):
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)


def _check_unique(cmd: Command, others) -> None:
    for other in others:
        if other.name == cmd.name:
            raise RuntimeError(f"command {cmd.name!r} is declared twice "
                               f"({other.handler.__module__} and {cmd.handler.__module__})")
        if cmd.route is not None and other.route == cmd.route:
            raise RuntimeError(f"route {cmd.route} is declared by {other.name!r} and {cmd.name!r}")


# Every command declared so far, by module, in declaration order (filled by @command at import time).
_DECLARED: dict[str, list[Command]] = {}


def command(name: str, *, params: type[Params], result: type[BaseModel],
            route: tuple[str, str] | None = None, mutating: bool = False, errors: tuple[type[Exception], ...] = (),
            auth: str = "app"):
    """Declares a command; see the module docstring."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        cmd = Command(name=name, handler=fn, params=params, result=result, doc=inspect.getdoc(fn) or "",
                      route=Route(*route) if route else None, mutating=mutating, errors=tuple(errors), auth=auth)
        _check_unique(cmd, [c for declared in _DECLARED.values() for c in declared])
        _DECLARED.setdefault(fn.__module__, []).append(cmd)
        return fn

    return decorate


def load_commands(modules: tuple[str, ...] = COMMAND_MODULES) -> Registry:
    """A new registry holding the commands of `modules` (imported once; later calls reuse the declarations)."""
    registry = Registry()
    for module in modules:
        importlib.import_module(module)
        for cmd in _DECLARED.get(module, ()):
            registry.add(cmd)
    return registry
