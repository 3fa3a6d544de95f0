"""Knowledge rows (SPEC 5.2 style_guides, characters, reference_sets, reference_items; 5.5 prompt_templates).

Run inside Store.read / Store.write, always scoped by project_id. Each mutation records its audit row in the
same transaction. Callers validate params first; what needs the database (does that asset belong to this
project? is that code taken?) is checked here, before anything is written.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from decimal import Decimal

from peewee import fn

from iat.audit import repo as audit
from iat.db.models import Asset, Character, PromptTemplate, ReferenceItem, ReferenceSet, StyleGuide
from iat.errors import Conflict, NotFound
from iat.knowledge import templates
from iat.knowledge.defaults import DEFAULT_STYLE_GUIDE, default_template
from iat.knowledge.rules import STAGES
from iat.pagination import keyset_page


def _new_id() -> str:
    return str(uuid.uuid4())


# --- style guides ---


def get_style_guide(project_id: str, guide_id: str) -> dict:
    row = StyleGuide.select().where((StyleGuide.project_id == project_id) & (StyleGuide.id == guide_id)) \
        .dicts().first()
    if row is None:
        raise NotFound(f"style guide {guide_id} not found in this project", details={"style_guide_id": guide_id})
    return row


def default_style_guide(project_id: str) -> dict | None:
    """The project's default guide, or None (a run then uses the embedded default rules)."""
    return StyleGuide.select().where((StyleGuide.project_id == project_id) & StyleGuide.is_default) \
        .dicts().first()


def resolve_style_guide(project_id: str, guide_id: str | None) -> dict:
    """The guide a run uses: the one named (NotFound if it is not this project's), else the project's default,
    else the embedded default guide (its id is None)."""
    if guide_id is not None:
        return get_style_guide(project_id, guide_id)
    return default_style_guide(project_id) or copy.deepcopy(DEFAULT_STYLE_GUIDE)


def list_style_guides(project_id: str, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    return keyset_page(StyleGuide.select().where(StyleGuide.project_id == project_id), StyleGuide, limit, cursor)


def _make_default(project_id: str, guide_id: str, now: datetime) -> list[str]:
    """Clears every other default of the project (one default per project); returns the ids it cleared."""
    others = StyleGuide.select(StyleGuide.id).where(
        (StyleGuide.project_id == project_id) & StyleGuide.is_default & (StyleGuide.id != guide_id))
    cleared = [r.id for r in others]
    if cleared:
        StyleGuide.update(is_default=False, updated_at=now).where(StyleGuide.id.in_(cleared)).execute()
    StyleGuide.update(is_default=True, updated_at=now).where(StyleGuide.id == guide_id).execute()
    return cleared


def create_style_guide(project_id: str, name: str, description: str, rules_json: dict, make_default: bool,
                       actor_id: str, now: datetime) -> dict:
    """Adds a guide; the project's first guide, or one created with make_default, becomes the default."""
    guide_id = _new_id()
    first = not StyleGuide.select().where(StyleGuide.project_id == project_id).exists()
    StyleGuide.insert(id=guide_id, project_id=project_id, name=name, description=description,
                      rules_json=rules_json, is_default=False, created_at=now, updated_at=now).execute()
    cleared = _make_default(project_id, guide_id, now) if first or make_default else []
    audit.record(project_id, actor_id, "style_guide.created",
                 {"id": guide_id, "name": name, "is_default": first or make_default, "cleared_default": cleared})
    return get_style_guide(project_id, guide_id)


def update_style_guide(project_id: str, guide_id: str, changes: dict, actor_id: str, now: datetime) -> dict:
    before = get_style_guide(project_id, guide_id)
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if changed:
        StyleGuide.update(**changed, updated_at=now).where(StyleGuide.id == guide_id).execute()
    audit.record(project_id, actor_id, "style_guide.updated", {"id": guide_id, "changed": sorted(changed)})
    return get_style_guide(project_id, guide_id)


def set_default_style_guide(project_id: str, guide_id: str, actor_id: str, now: datetime) -> dict:
    get_style_guide(project_id, guide_id)
    cleared = _make_default(project_id, guide_id, now)
    audit.record(project_id, actor_id, "style_guide.default_set", {"id": guide_id, "cleared_default": cleared})
    return get_style_guide(project_id, guide_id)


# --- reference sets and their items ---


def get_reference_set(project_id: str, set_id: str) -> dict:
    row = ReferenceSet.select().where((ReferenceSet.project_id == project_id) & (ReferenceSet.id == set_id)) \
        .dicts().first()
    if row is None:
        raise NotFound(f"reference set {set_id} not found in this project", details={"reference_set_id": set_id})
    return row


def get_reference_set_with_items(project_id: str, set_id: str) -> dict:
    row = get_reference_set(project_id, set_id)
    items = (ReferenceItem.select().where(ReferenceItem.reference_set_id == set_id)
             .order_by(ReferenceItem.created_at, ReferenceItem.id).dicts())
    return {**row, "items": list(items)}


def list_reference_sets(project_id: str, kind: str | None, limit: int,
                        cursor: str | None) -> tuple[list[dict], str | None]:
    query = ReferenceSet.select().where(ReferenceSet.project_id == project_id)
    if kind is not None:
        query = query.where(ReferenceSet.kind == kind)
    return keyset_page(query, ReferenceSet, limit, cursor)


def create_reference_set(project_id: str, name: str, kind: str, metadata_json: dict, actor_id: str,
                         now: datetime) -> dict:
    set_id = _new_id()
    ReferenceSet.insert(id=set_id, project_id=project_id, name=name, kind=kind, metadata_json=metadata_json,
                        created_at=now, updated_at=now).execute()
    audit.record(project_id, actor_id, "reference_set.created", {"id": set_id, "name": name, "kind": kind})
    return get_reference_set_with_items(project_id, set_id)


def _project_asset(project_id: str, asset_id: str) -> dict:
    row = Asset.select(Asset.id, Asset.kind).where((Asset.project_id == project_id) & (Asset.id == asset_id)) \
        .dicts().first()
    if row is None:
        # Per SPEC 7 no cross-project references: an asset of another project is as unknown here as a made-up id.
        raise NotFound(f"asset {asset_id} is not an asset of this project", details={"asset_id": asset_id})
    return row


def add_reference_item(project_id: str, set_id: str, asset_id: str, weight: Decimal, notes: str, actor_id: str,
                       now: datetime) -> dict:
    """Adds an asset of this project to a set; an asset already in the set is a Conflict (nothing changes)."""
    get_reference_set(project_id, set_id)
    _project_asset(project_id, asset_id)
    existing = ReferenceItem.select(ReferenceItem.id).where(
        (ReferenceItem.reference_set_id == set_id) & (ReferenceItem.asset_id == asset_id)).first()
    if existing is not None:
        raise Conflict(f"asset {asset_id} is already in reference set {set_id}; remove it first to change it",
                       details={"reference_set_id": set_id, "asset_id": asset_id, "item_id": existing.id})
    item_id = _new_id()
    ReferenceItem.insert(id=item_id, reference_set_id=set_id, asset_id=asset_id, weight=weight, notes=notes,
                         created_at=now).execute()
    ReferenceSet.update(updated_at=now).where(ReferenceSet.id == set_id).execute()
    audit.record(project_id, actor_id, "reference_set.item_added",
                 {"reference_set_id": set_id, "item_id": item_id, "asset_id": asset_id, "weight": str(weight)})
    return ReferenceItem.select().where(ReferenceItem.id == item_id).dicts().first()


def remove_reference_item(project_id: str, set_id: str, asset_id: str, actor_id: str, now: datetime) -> dict:
    get_reference_set(project_id, set_id)
    item = ReferenceItem.select().where(
        (ReferenceItem.reference_set_id == set_id) & (ReferenceItem.asset_id == asset_id)).dicts().first()
    if item is None:
        raise NotFound(f"asset {asset_id} is not in reference set {set_id}",
                       details={"reference_set_id": set_id, "asset_id": asset_id})
    ReferenceItem.delete().where(ReferenceItem.id == item["id"]).execute()
    ReferenceSet.update(updated_at=now).where(ReferenceSet.id == set_id).execute()
    audit.record(project_id, actor_id, "reference_set.item_removed",
                 {"reference_set_id": set_id, "item_id": item["id"], "asset_id": asset_id})
    return item


# --- characters ---


def get_character(project_id: str, character_id: str) -> dict:
    row = Character.select().where((Character.project_id == project_id) & (Character.id == character_id)) \
        .dicts().first()
    if row is None:
        raise NotFound(f"character {character_id} not found in this project", details={"character_id": character_id})
    return row


def list_characters(project_id: str, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    return keyset_page(Character.select().where(Character.project_id == project_id), Character, limit, cursor)


def all_characters(project_id: str) -> list[dict]:
    """Every character of the project by code (what a run renders its prompts with)."""
    return list(Character.select().where(Character.project_id == project_id).order_by(Character.code).dicts())


def _check_reference_set(project_id: str, identity: dict) -> None:
    if identity.get("reference_set_id") is not None:
        get_reference_set(project_id, identity["reference_set_id"])


def create_character(project_id: str, code: str, name: str, bio: str, identity: dict, actor_id: str,
                     now: datetime) -> dict:
    if Character.select().where((Character.project_id == project_id) & (Character.code == code)).exists():
        raise Conflict(f"character code {code!r} is taken in this project", details={"code": code})
    _check_reference_set(project_id, identity)
    character_id = _new_id()
    Character.insert(id=character_id, project_id=project_id, code=code, name=name, bio=bio,
                     identity_constraints_json=identity, created_at=now, updated_at=now).execute()
    audit.record(project_id, actor_id, "character.created", {"id": character_id, "code": code, "name": name})
    return get_character(project_id, character_id)


def update_character(project_id: str, character_id: str, changes: dict, actor_id: str, now: datetime) -> dict:
    """Changes name, bio or identity constraints; the code is not among what can change."""
    before = get_character(project_id, character_id)
    if "identity_constraints_json" in changes:
        _check_reference_set(project_id, changes["identity_constraints_json"])
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if changed:
        Character.update(**changed, updated_at=now).where(Character.id == character_id).execute()
    audit.record(project_id, actor_id, "character.updated",
                 {"id": character_id, "code": before["code"], "changed": sorted(changed)})
    return get_character(project_id, character_id)


# --- prompt templates ---


def create_prompt_template(project_id: str, name: str, stage: str, text: str, actor_id: str,
                           now: datetime) -> dict:
    """Adds version max+1 of (name, stage), active, and deactivates the active one before it; older versions
    are never rewritten. The template's character codes must exist in the project."""
    codes = [r.code for r in Character.select(Character.code).where(Character.project_id == project_id)]
    templates.validate(text, stage, name, known_codes=codes)
    same = (PromptTemplate.project_id == project_id) & (PromptTemplate.name == name) & (PromptTemplate.stage == stage)
    latest = PromptTemplate.select(fn.MAX(PromptTemplate.version)).where(same).scalar()
    deactivated = [r.id for r in PromptTemplate.select(PromptTemplate.id).where(same & PromptTemplate.is_active)]
    if deactivated:
        PromptTemplate.update(is_active=False).where(PromptTemplate.id.in_(deactivated)).execute()
    template_id = _new_id()
    version = (latest or 0) + 1
    PromptTemplate.insert(id=template_id, project_id=project_id, name=name, stage=stage, template_text=text,
                          version=version, is_active=True, created_at=now).execute()
    audit.record(project_id, actor_id, "prompt_template.created",
                 {"id": template_id, "name": name, "stage": stage, "version": version, "deactivated": deactivated})
    return PromptTemplate.select().where(PromptTemplate.id == template_id).dicts().first()


def list_prompt_templates(project_id: str, stage: str | None, name: str | None, active_only: bool, limit: int,
                          cursor: str | None) -> tuple[list[dict], str | None]:
    query = PromptTemplate.select().where(PromptTemplate.project_id == project_id)
    if stage is not None:
        query = query.where(PromptTemplate.stage == stage)
    if name is not None:
        query = query.where(PromptTemplate.name == name)
    if active_only:
        query = query.where(PromptTemplate.is_active)
    return keyset_page(query, PromptTemplate, limit, cursor)


def active_templates(project_id: str, name: str) -> dict[str, dict]:
    """The template each stage of a run uses: the project's active version of `name`, else the embedded default
    (version 0). What a run records with its settings snapshot."""
    rows = PromptTemplate.select().where((PromptTemplate.project_id == project_id) & (PromptTemplate.name == name)
                                         & PromptTemplate.is_active).dicts()
    found = {r["stage"]: r for r in rows}
    return {stage: found.get(stage) or default_template(stage) for stage in STAGES}
