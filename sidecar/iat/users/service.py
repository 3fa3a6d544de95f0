"""Users (SPEC 2.1): a single seeded `local` user for now; the table is multi-user ready."""

from __future__ import annotations

import uuid

from iat.clock import utcnow
from iat.db.models import AppUser
from iat.errors import NotFound

LOCAL_USERNAME = "local"


def ensure_local_user() -> None:
    """Seeds the `local` user on first start (inside a write)."""
    if not AppUser.select().where(AppUser.username == LOCAL_USERNAME).exists():
        now = utcnow()
        AppUser.insert(id=str(uuid.uuid4()), username=LOCAL_USERNAME, display_name="Local user", email=None,
                       is_active=True, created_at=now, updated_at=now).execute()


def get_user(username: str) -> dict:
    row = AppUser.select().where(AppUser.username == username).dicts().first()
    if row is None:
        raise NotFound(f"user {username!r} not found", details={"username": username})
    return row


def list_users() -> list[dict]:
    return list(AppUser.select().order_by(AppUser.username).dicts())
