"""Assets (SPEC 5.3): the registry of every file in a project's life, always scoped by project_id."""

from __future__ import annotations

from iat.db.models import Asset
from iat.errors import NotFound
from iat.pagination import keyset_page


def list_assets(project_id: str, kind: str | None, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    query = Asset.select().where(Asset.project_id == project_id)
    if kind is not None:
        query = query.where(Asset.kind == kind)
    return keyset_page(query, Asset, limit, cursor)


def get_asset(project_id: str, asset_id: str) -> dict:
    row = Asset.select().where((Asset.project_id == project_id) & (Asset.id == asset_id)).dicts().first()
    if row is None:
        raise NotFound(f"asset {asset_id} not found in this project", details={"asset_id": asset_id})
    return row
