"""system.*: liveness, facts about this sidecar, authentication of socket peers, shutdown."""

from __future__ import annotations

import platform
import secrets
import sys
from datetime import datetime

from iat.clock import utcnow
from iat.errors import Unauthorized
from iat.commands.common import NoParams
from iat.registry import Params, Result, command


class Pong(Result):
    pong: bool
    time: datetime


@command("system.ping", params=NoParams, result=Pong, route=("GET", "/api/system/ping"))
def ping(ctx, p: NoParams) -> Pong:
    """Answers at once; a liveness check that touches no database."""
    return Pong(pong=True, time=utcnow())


class SchemaVersions(Result):
    app: int
    project: int


class Info(Result):
    version: str
    schema_version: SchemaVersions
    pid: int
    home: str
    python: str
    platform: str
    frozen: bool
    transports: dict[str, dict]
    commands: int


@command("system.info", params=NoParams, result=Info, route=("GET", "/api/system/info"))
def info(ctx, p: NoParams) -> Info:
    """Version, schema versions, process id, data home, runtime and the transports this sidecar serves."""
    app = ctx.app
    return Info(**app.info(), python=platform.python_version(), platform=platform.platform(),
                frozen=bool(getattr(sys, "frozen", False)),
                transports={k: {kk: vv for kk, vv in v.items() if kk != "token"}
                            for k, v in app.started_transports.items()},
                commands=len(app.registry))


class AuthParams(Params):
    token: str


class AuthResult(Result):
    authenticated: bool


@command("system.auth", params=AuthParams, result=AuthResult)
def auth(ctx, p: AuthParams) -> AuthResult:
    """Authenticates a socket or websocket peer with the per-start token from sidecar.ready (first message)."""
    if not secrets.compare_digest(p.token.encode(), ctx.app.token.encode()):
        ctx.session.data["auth_failed"] = True
        raise Unauthorized("wrong token")
    ctx.session.authenticated = True
    return AuthResult(authenticated=True)


class Stopping(Result):
    stopping: bool


@command("system.shutdown", params=NoParams, result=Stopping, route=("POST", "/api/system/shutdown"))
def shutdown(ctx, p: NoParams) -> Stopping:
    """Stops the sidecar gracefully: in-flight calls finish and databases close within 2 seconds."""
    ctx.app.shutdown_requested.set()
    return Stopping(stopping=True)
