"""Assets and their links (SPEC 5.3): rows always scoped by project_id; run inside Store.read / Store.write.

Rows and files: an asset row names its file by `storage_uri`, relative to the project root (iat.assets.store).
Several rows may share one file (the same bytes registered again, e.g. by a replayed run).

Links read "child <link_type> parent": the parent is the upstream asset, the child what came from or uses it.
    derived_from   the child was made from the parent (a stage output from its input)
    variant_of     the child is a variant of the parent
    mask_for       the child is a mask for the parent
    reference_of   the parent served as a reference for the child
Ancestors of an asset are reached by walking to parents, descendants by walking to children, through every link
type. Both ends of a link belong to one project (SPEC 7); `derived_from` links never form a cycle.

Every mutation writes its audit row in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterable, Literal, Sequence

from peewee import SQL, chunked, fn

from iat.assets.store import BACKEND, StoredFile
from iat.audit import repo as audit
from iat.db.models import Asset, AssetLink
from iat.errors import Conflict, InvalidParams, NotFound
from iat.pagination import keyset_page

LINK_TYPES = ("derived_from", "variant_of", "mask_for", "reference_of")
Direction = Literal["ancestors", "descendants"]
_IDS_PER_QUERY = 500


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


def find_by_sha(project_id: str, sha256: str, kind: str | None = None) -> dict | None:
    """The first registered asset of this project with these bytes (and this kind, when given), or None."""
    query = Asset.select().where((Asset.project_id == project_id) & (Asset.sha256 == sha256))
    if kind is not None:
        query = query.where(Asset.kind == kind)
    return query.order_by(Asset.created_at, Asset.id).dicts().first()


def referenced_uris(project_id: str, uris: Iterable[str] | None = None) -> set[str]:
    """The local storage uris that rows of this project reference: all of them, or those among `uris`."""
    base = Asset.select(Asset.storage_uri).where((Asset.project_id == project_id) & (Asset.storage_backend == BACKEND))
    if uris is None:
        return {row[0] for row in base.tuples()}
    found: set[str] = set()
    for part in chunked(list(dict.fromkeys(uris)), _IDS_PER_QUERY):
        found.update(row[0] for row in base.where(Asset.storage_uri.in_(part)).tuples())
    return found


def _row(project_id: str, kind: str, stored: StoredFile, metadata: dict, now: datetime) -> dict:
    return {"id": str(uuid.uuid4()), "project_id": project_id, "kind": kind, "storage_uri": stored.rel_uri,
            "storage_backend": BACKEND, "mime_type": stored.mime_type, "width": stored.width,
            "height": stored.height, "sha256": stored.sha256,
            "metadata_json": {"size_bytes": stored.size, **metadata}, "created_at": now}


def insert_asset(project_id: str, kind: str, stored: StoredFile, metadata: dict, now: datetime,
                 actor_id: str | None = None) -> dict:
    """Registers one stored file as a new asset row (no deduplication: the caller decides) and audits it.
    `metadata_json` gets `size_bytes` besides `metadata`."""
    row = _row(project_id, kind, stored, metadata, now)
    Asset.insert(**row).execute()
    audit.record(project_id, actor_id, "asset.created",
                 {"asset_id": row["id"], "kind": kind, "sha256": stored.sha256, "storage_uri": stored.rel_uri})
    return row


def import_assets(project_id: str, kind: str, files: Sequence[tuple[StoredFile, dict]], now: datetime,
                  actor_id: str | None = None) -> list[tuple[dict, bool]]:
    """Registers a batch: per (stored file, metadata), the asset row and whether it was deduplicated (an asset
    of this kind with these bytes existed already, in the project or earlier in the batch). New rows go in
    with multi-row inserts; one audit row records the batch."""
    shas = list(dict.fromkeys(stored.sha256 for stored, _ in files))
    known: dict[str, dict] = {}
    for part in chunked(shas, _IDS_PER_QUERY):
        query = (Asset.select().where((Asset.project_id == project_id) & (Asset.kind == kind)
                                      & Asset.sha256.in_(part)).order_by(Asset.created_at.desc(), Asset.id.desc()))
        for row in query.dicts():
            known[row["sha256"]] = row  # oldest last, so the first registered wins
    out: list[tuple[dict, bool]] = []
    new: list[dict] = []
    for stored, metadata in files:
        row = known.get(stored.sha256)
        if row is not None:
            out.append((row, True))
            continue
        row = known[stored.sha256] = _row(project_id, kind, stored, metadata, now)
        new.append(row)
        out.append((row, False))
    _insert_many(Asset, new)
    audit.record(project_id, actor_id, "assets.imported",
                 {"kind": kind, "files": len(files), "created": len(new), "deduplicated": len(files) - len(new),
                  "asset_ids": [row["id"] for row in new]})
    return out


def insert_derived(project_id: str, outputs: Sequence[tuple], now: datetime, event: str, payload: dict,
                   actor_id: str | None = None) -> list[dict]:
    """Registers the images one piece of work made, each `(kind, stored, metadata, parent[, link_type])` where
    `parent` is the index of the output it was made from (None: none) and `link_type` the link to it (default
    derived_from; a mask is mask_for the image it was cut from): new rows and their links in bulk, one audit row
    for the lot. The links need none of insert_link's checks: both ends are rows made here, in this project, and a
    new row cannot close a cycle."""
    rows = [_row(project_id, out[0], out[1], out[2], now) for out in outputs]
    links = [{"id": str(uuid.uuid4()), "project_id": project_id, "parent_asset_id": rows[out[3]]["id"],
              "child_asset_id": rows[i]["id"], "link_type": out[4] if len(out) > 4 else "derived_from",
              "created_at": now}
             for i, out in enumerate(outputs) if out[3] is not None]
    _insert_many(Asset, rows)
    _insert_many(AssetLink, links)
    audit.record(project_id, actor_id, event, {**payload, "asset_ids": [r["id"] for r in rows]})
    return rows


def _insert_many(model, rows: list[dict]) -> None:
    """Inserts rows (dicts with the same keys) through one prepared statement and DB-API executemany, in the
    current transaction. peewee's insert_many renders every value into the SQL text (~0.2 ms a row of assets,
    most of a 2,000-file import's database time); this converts values with the same fields' db_value."""
    if not rows:
        return
    database = model._meta.database
    names = list(rows[0])
    fields = [model._meta.columns[name] for name in names]
    open_q, close_q = database.quote
    columns = ", ".join(f"{open_q}{name}{close_q}" for name in names)
    sql = (f"INSERT INTO {open_q}{model._meta.table_name}{close_q} ({columns}) "
           f"VALUES ({', '.join([database.param] * len(names))})")
    values = [tuple(field.db_value(row[name]) for field, name in zip(fields, names)) for row in rows]
    database.cursor().executemany(sql, values)


# --- links ---


def insert_link(project_id: str, parent_id: str, child_id: str, link_type: str, now: datetime,
                actor_id: str | None = None, *, exist_ok: bool = False) -> dict:
    """Links two assets of this project. Refuses an unknown type (InvalidParams), and as Conflict: a self-link, an
    asset of another project (or of none), a `derived_from` link that would close a cycle, and (unless exist_ok) a
    link that exists already."""
    parent_id, child_id = str(parent_id), str(child_id)
    if link_type not in LINK_TYPES:
        raise InvalidParams(f"unknown link type {link_type!r}; one of {', '.join(LINK_TYPES)}",
                            details={"link_type": link_type, "allowed": list(LINK_TYPES)})
    if parent_id == child_id:
        raise Conflict("an asset cannot be linked to itself", details={"asset_id": parent_id})
    found = {row[0] for row in Asset.select(Asset.id)
             .where((Asset.project_id == project_id) & Asset.id.in_([parent_id, child_id])).tuples()}
    for name, asset_id in (("parent_asset_id", parent_id), ("child_asset_id", child_id)):
        if asset_id not in found:
            # Conflict, not NotFound: the request names an existing collection; what it asks for contradicts the
            # project's contents (SPEC 7: no reference crosses projects), whether the asset is elsewhere or nowhere.
            raise Conflict(f"asset {asset_id} ({name}) is not an asset of this project; a link joins two assets "
                           "of one project", details={"asset_id": asset_id, "param": name})
    existing = (AssetLink.select().where((AssetLink.project_id == project_id)
                                         & (AssetLink.parent_asset_id == parent_id)
                                         & (AssetLink.child_asset_id == child_id)
                                         & (AssetLink.link_type == link_type)).dicts().first())
    if existing is not None:
        if exist_ok:
            return existing
        raise Conflict(f"asset {child_id} is already linked to {parent_id} as {link_type}",
                       details={"link_id": existing["id"]})
    if link_type == "derived_from" and _reaches(project_id, child_id, parent_id, "derived_from"):
        raise Conflict(f"linking {child_id} derived_from {parent_id} would make a cycle: {parent_id} already "
                       f"derives from {child_id}", details={"parent_asset_id": parent_id,
                                                            "child_asset_id": child_id})
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "parent_asset_id": parent_id,
           "child_asset_id": child_id, "link_type": link_type, "created_at": now}
    AssetLink.insert(**row).execute()
    audit.record(project_id, actor_id, "asset.linked", {"link_id": row["id"], "parent_asset_id": parent_id,
                                                        "child_asset_id": child_id, "link_type": link_type})
    return row


def _reaches(project_id: str, start: str, target: str, link_type: str) -> bool:
    """Whether `target` is a descendant of `start` through links of one type (UNION drops repeats, so the
    walk ends even on a cyclic graph). (No CTE column is called `node`: peewee's `cte.c.node` is the CTE.)"""
    base = (AssetLink.select(AssetLink.child_asset_id.alias("reached"))
            .where((AssetLink.project_id == project_id) & (AssetLink.parent_asset_id == start)
                   & (AssetLink.link_type == link_type)))
    down = base.cte("down", recursive=True, columns=("reached",))
    step_link = AssetLink.alias()
    step = (step_link.select(step_link.child_asset_id)
            .join(down, on=(step_link.parent_asset_id == down.c.reached))
            .where((step_link.project_id == project_id) & (step_link.link_type == link_type)))
    walk = down.union(step)
    return walk.select_from(walk.c.reached).where(walk.c.reached == target).exists()


# --- lineage ---


def _walk(project_id: str, asset_id: str, direction: Direction, max_depth: int,
          link_types: Sequence[str] | None):
    """The recursive CTE `walk(link_id, reached, depth)`: each link followed from `asset_id` in `direction`, the
    asset it reaches and at which depth (1 = a direct parent or child). Rows are distinct (UNION) and depth is
    bounded, so cycles of the non-derived_from types end too."""

    def ends(model):
        if direction == "ancestors":
            return model.child_asset_id, model.parent_asset_id
        return model.parent_asset_id, model.child_asset_id

    def scope(model):
        cond = model.project_id == project_id
        return cond & model.link_type.in_(list(link_types)) if link_types else cond

    near, far = ends(AssetLink)
    base = (AssetLink.select(AssetLink.id.alias("link_id"), far.alias("reached"), SQL("1").alias("depth"))
            .where(scope(AssetLink) & (near == asset_id)))
    walk = base.cte("walk", recursive=True, columns=("link_id", "reached", "depth"))
    step_link = AssetLink.alias()
    step_near, step_far = ends(step_link)
    step = (step_link.select(step_link.id, step_far, walk.c.depth + 1)
            .join(walk, on=(step_near == walk.c.reached))
            .where(scope(step_link) & (walk.c.depth < max_depth)))
    return walk.union(step)


def lineage(project_id: str, asset_id: str, direction: Direction, max_depth: int = 32,
            link_types: Sequence[str] | None = None) -> dict:
    """Ancestors or descendants of an asset up to `max_depth` links away, through every link type (or those of
    `link_types`): `nodes` are asset rows with `depth` (the asset itself at 0, then by shortest distance) and
    `edges` the link rows followed."""
    asset_id = str(asset_id)
    start = get_asset(project_id, asset_id)
    walk = _walk(project_id, asset_id, direction, max_depth, link_types)
    depth = fn.MIN(walk.c.depth)
    nodes = list(Asset.select(Asset, depth.alias("depth"))
                 .join(walk, on=(Asset.id == walk.c.reached))
                 .where((Asset.project_id == project_id) & (Asset.id != asset_id))
                 .group_by(Asset.id)
                 .order_by(depth, Asset.created_at, Asset.id)
                 .with_cte(walk).dicts())
    walk = _walk(project_id, asset_id, direction, max_depth, link_types)
    edges = list(AssetLink.select()
                 .where((AssetLink.project_id == project_id)
                        & AssetLink.id.in_(walk.select_from(walk.c.link_id)))
                 .order_by(AssetLink.created_at, AssetLink.id).dicts())
    return {"asset_id": asset_id, "direction": direction, "nodes": [{**start, "depth": 0}, *nodes],
            "edges": edges}
