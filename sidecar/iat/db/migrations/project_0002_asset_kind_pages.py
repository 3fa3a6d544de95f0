"""Project chain 0002: indexes the pipeline's reads need.

- The spec's index `(project_id, kind, created_at DESC)` lacks the `id` tie-breaker that `assets.list` pages by,
  so a rare kind's pages scanned and sorted; `(project_id, kind, created_at DESC, id DESC)` goes beside it.
- `asset_links` is unique on (parent, child, type), which serves walks to descendants; a walk to ancestors
  (`assets.lineage`, a run's lineage) looks links up by child, which scanned the table."""

from iat.db.schema import Index

NAME = "asset_kind_pages"

OPERATIONS = (
    Index("ix_assets_project_kind_created_id", "assets", ("project_id", "kind", "created_at DESC", "id DESC")),
    Index("ix_asset_links_project_child", "asset_links", ("project_id", "child_asset_id")),
)
