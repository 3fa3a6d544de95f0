"""The one command registry every transport serves.

A command is declared once, next to its handler:

    @command("projects.get", params=ProjectRef, result=ProjectOut, route=("GET", "/api/projects/{slug}"))
    def get_project(ctx: CallContext, p: ProjectRef) -> ProjectOut:
        '''Returns one project by slug.'''

The declaration is the JSON-RPC method, the REST route, the OpenAPI operation and the JSON Schemas. A duplicate
name fails at import.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from iat.rpc.protocol import CallContext

# Modules holding commands; each is imported once by load_commands().
COMMAND_MODULES = (
    "iat.commands.system",
    "iat.commands.users",
    "iat.commands.projects",
    "iat.commands.storage",
    "iat.commands.audit",
    "iat.commands.assets",
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

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""


class Registry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, cmd: Command) -> None:
        if cmd.name in self._commands:
            raise RuntimeError(f"command {cmd.name!r} is declared twice "
                               f"({self._commands[cmd.name].handler.__module__} and {cmd.handler.__module__})")
        if cmd.route is not None:
            for other in self._commands.values():
                if other.route == cmd.route:
                    raise RuntimeError(f"route {cmd.route} is declared by {other.name!r} and {cmd.name!r}")
        self._commands[cmd.name] = cmd

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __iter__(self):
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)


REGISTRY = Registry()


def command(name: str, *, params: type[Params], result: type[BaseModel],
            route: tuple[str, str] | None = None, mutating: bool = False):
    """Declares a command; see the module docstring."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY.add(Command(name=name, handler=fn, params=params, result=result, doc=inspect.getdoc(fn) or "",
                             route=Route(*route) if route else None, mutating=mutating))
        return fn

    return decorate


def load_commands() -> Registry:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    return REGISTRY
