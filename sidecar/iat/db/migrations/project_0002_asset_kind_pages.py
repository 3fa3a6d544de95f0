"""Project chain 0002: keyset pages of one asset kind seek in an index.

The spec's index `(project_id, kind, created_at DESC)` lacks the `id` tie-breaker that `assets.list` pages by, so a
rare kind's pages scanned and sorted; this adds `(project_id, kind, created_at DESC, id DESC)` beside it."""

from iat.db.schema import Index

NAME = "asset_kind_pages"

OPERATIONS = (
    Index("ix_assets_project_kind_created_id", "assets", ("project_id", "kind", "created_at DESC", "id DESC")),
)
