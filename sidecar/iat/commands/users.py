"""users.*: the users of this installation (one `local` user until authentication lands)."""

from __future__ import annotations

from datetime import datetime

from iat.commands.common import NoParams
from iat.lazy import lazy_import
from iat.registry import Params, Result, command

service = lazy_import("iat.users.service")


class UserOut(Result):
    id: str
    username: str
    display_name: str
    email: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


class UserList(Result):
    items: list[UserOut]


class UserRef(Params):
    username: str


@command("users.list", params=NoParams, result=UserList, route=("GET", "/api/users"))
def list_users(ctx, p: NoParams) -> UserList:
    """Lists every user of this installation."""
    return UserList(items=ctx.app.app_store.read(service.list_users))


@command("users.get", params=UserRef, result=UserOut, route=("GET", "/api/users/{username}"))
def get_user(ctx, p: UserRef) -> UserOut:
    """Returns one user by username."""
    return UserOut.model_validate(ctx.app.app_store.read(service.get_user, p.username))
