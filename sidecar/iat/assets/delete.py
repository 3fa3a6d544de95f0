"""Deleting one asset that nothing depends on (assets.delete).

What may go with it: its links (asset_links where it is the parent or the child: a derived child stays, with its
own file, and only loses its link to it). What makes it "in use", refused as a conflict listing the users: every
other foreign key to `assets` in the project schema (a job's or a candidate's final, a candidate's output, a
reference item, an export's package, a chat message's voice, a voice request's input or output ... found from
the migrations' schema, so a later table that points at assets is covered without a change here), and a run
candidate's chain of steps (its `meta_json` names each stage's image and mask: the contact sheet and the results
read them back).

Rows first, then the file: the row, its links and the audit row go in one write transaction; after the commit the
file is removed when no other asset row of the project names the same storage_uri (the store is content-addressed:
rows with the same bytes share one file), in a second write so no row naming it can be committed meanwhile
(iat.assets.store). A crash between the two leaves an orphan file, never a row without its file; the store's
orphan sweep (`store.sweep_orphans`, run when a run starts or resumes) removes it.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING

from iat.assets import repo, store
from iat.audit import repo as audit
from iat.db.models import PROJECT_MODELS, Asset, AssetLink, RunCandidate
from iat.errors import Conflict, IATError

if TYPE_CHECKING:
    from iat.projects.directory import ProjectHandle

log = logging.getLogger(__name__)

# Rows named per user kind in a conflict's details (the count is always complete).
_IDS_SHOWN = 20

# Words for the references users see; a table added later shows as "table.column".
_WORDS = {
    ("run_jobs", "final_asset_id"): "a shot's final image",
    ("run_candidates", "output_asset_id"): "a run candidate's output",
    ("run_candidates", "final_asset_id"): "a run candidate's final image",
    ("reference_items", "asset_id"): "a reference set item",
    ("project_exports", "export_asset_id"): "an export's package",
    ("chat_messages", "voice_asset_id"): "a chat message's voice recording",
    ("voice_requests", "input_asset_id"): "a voice request's input",
    ("voice_requests", "output_asset_id"): "a voice request's output",
}


@cache
def _references() -> tuple[tuple[type, str], ...]:
    """(model, column) of every foreign key to assets in the project schema, links aside (they go with it)."""
    from iat.db.migrations import build_schema

    models = {m._meta.table_name: m for m in PROJECT_MODELS}
    return tuple((models[table.name], col.name)
                 for table in build_schema("project").tables.values() if table.name != "asset_links"
                 for col in table.columns if col.references == "assets")


def users(asset: dict) -> list[dict]:
    """Inside a read: what uses the asset, one entry per kind of reference: {table, column, what, count, ids}."""
    asset_id = str(asset["id"])
    out = []
    for model, column in _references():
        field = getattr(model, column)
        query = model.select(model.id).where(field == asset_id)
        count = query.count()
        if count:
            ids = [str(i) for (i,) in query.order_by(model.id).limit(_IDS_SHOWN).tuples()]
            out.append({"table": model._meta.table_name, "column": column,
                        "what": _WORDS.get((model._meta.table_name, column), f"{model._meta.table_name}.{column}"),
                        "count": count, "ids": ids})
    step = _candidate_step(asset)
    if step is not None:
        out.append(step)
    return out


def _candidate_step(asset: dict) -> dict | None:
    """The run candidate whose chain of steps (meta_json assets / masks) names this asset: a run's images carry
    their job and candidate in their metadata, so this is one lookup, not a scan of every candidate."""
    meta = asset.get("metadata_json") or {}
    job_id, index = meta.get("job_id"), meta.get("candidate_index")
    if not job_id or index is None:
        return None
    row = (RunCandidate.select(RunCandidate.id, RunCandidate.meta_json)
           .where(RunCandidate.job_id == job_id, RunCandidate.candidate_index == index).dicts().first())
    if row is None:
        return None
    named = [*(row["meta_json"] or {}).get("assets", []), *(row["meta_json"] or {}).get("masks", [])]
    if not any(str(item.get("asset_id")) == str(asset["id"]) for item in named):
        return None
    return {"table": "run_candidates", "column": "meta_json", "what": "a step of a run candidate's chain",
            "count": 1, "ids": [str(row["id"])]}


def delete_rows(project_id: str, asset_id: str, actor_id: str | None) -> dict:
    """Inside a write: deletes the asset's row and its links with an audit row; returns the row and the links
    removed. An asset of another project (or none) is not_found; one in use is a conflict and nothing changes."""
    asset = repo.get_asset(project_id, asset_id)
    used = users(asset)
    if used:
        summary = "; ".join(f"{u['what']} ({u['count']})" for u in used)
        raise Conflict(f"asset {asset_id} is in use and cannot be deleted: {summary}",
                       details={"asset_id": asset_id, "used_by": used})
    linked = ((AssetLink.parent_asset_id == asset_id) | (AssetLink.child_asset_id == asset_id))
    links = list(AssetLink.select().where((AssetLink.project_id == project_id) & linked).dicts())
    AssetLink.delete().where((AssetLink.project_id == project_id) & linked).execute()
    Asset.delete().where((Asset.project_id == project_id) & (Asset.id == asset_id)).execute()
    audit.record(project_id, actor_id, "asset.deleted",
                 {"asset_id": asset_id, "kind": asset["kind"], "sha256": asset["sha256"],
                  "storage_uri": asset["storage_uri"], "storage_backend": asset["storage_backend"],
                  "links_removed": [link["id"] for link in links]})
    return {"asset": asset, "links": links}


def _remove_file(project_id: str, root, storage_uri: str) -> bool:
    """Inside a write: the file goes only when no asset row of the project names it any more."""
    return bool(store.remove_unreferenced(root, [storage_uri], repo.referenced_uris(project_id, [storage_uri])))


def delete_asset(handle: ProjectHandle, asset_id: str, actor_id: str | None) -> dict:
    """The asset's rows, then its file when no other row shares it. Returns {asset, links, file_removed}."""
    out = handle.store.write(delete_rows, handle.id, str(asset_id), actor_id)
    asset = out["asset"]
    out["file_removed"] = False
    if asset["storage_backend"] == store.BACKEND:
        try:
            out["file_removed"] = handle.store.write(_remove_file, handle.id, handle.root, asset["storage_uri"])
        except (OSError, IATError):
            # The rows are gone already: the file is an orphan the next sweep takes; the deletion stands.
            log.warning("the file of deleted asset %s stays until the next orphan sweep", asset_id, exc_info=True)
    return out
