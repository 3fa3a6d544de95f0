"""Creative knowledge through the in-process client: style guides, reference sets, characters, prompt templates,
and the template language they feed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from iat.app import App
from iat.clock import utcnow
from iat.db.models import Asset
from iat.errors import InvalidParams, NotFound
from iat.knowledge import repo, templates
from iat.knowledge.defaults import DEFAULT_STYLE_GUIDE, DEFAULT_TEMPLATES
from iat.knowledge.rules import STAGES, StyleRules, parse_rules

from support import Client


def audit_codes(client: Client, slug: str = "alpha") -> list[str]:
    return [e["event_code"] for e in client.call("audit.list", slug=slug, limit=500)["items"]][::-1]


def db_rows(project: dict, sql: str) -> list[tuple]:
    with sqlite3.connect(Path(project["root_dir"]) / "project.db") as db:
        return db.execute(sql).fetchall()


def add_asset(app: App, slug: str) -> str:
    """An image asset row, written the way the asset registry writes them (assets.import is not needed here)."""
    handle = app.projects.open(slug)
    asset_id = str(uuid.uuid4())

    def insert() -> None:
        Asset.insert(id=asset_id, project_id=handle.id, kind="reference", storage_uri=f"assets/{asset_id}.png",
                     storage_backend="local", mime_type="image/png", width=64, height=64, sha256="0" * 64,
                     metadata_json={}, created_at=utcnow()).execute()

    handle.store.write(insert)
    return asset_id


def error_locs(err) -> list[list]:
    return [e["loc"] for e in err.details["errors"]]


# --- style guides ---


def test_style_guide_crud_first_is_default_and_rules_normalised(client: Client, project: dict, app: App):
    events: list[tuple[str, dict]] = []
    app.events.subscribe(lambda name, payload: events.append((name, payload)))

    first = client.call("style_guides.create", slug="alpha", name="Ink", rules_json={})
    assert first["is_default"] is True
    # {} is a complete guide: every field stored with its default, aspect derived from the size.
    assert first["rules_json"] == StyleRules().model_dump(mode="json")
    assert first["rules_json"]["size"] == {"width": 768, "height": 512, "aspect": "3:2"}

    second = client.call("style_guides.create", slug="alpha", name="Night", description="dark",
                         rules_json={"palette": ["#AABBCC", "#102030"], "max_chroma": 0.1,
                                     "size": {"width": 1024, "height": 576.0},  # an integer to JSON Schema
                                     "lighting": {"night": {"description": "neon", "tint": "#FF00AA"}},
                                     "stage_defaults": {"advanced": {"steps": 12, "sampler": "euler", "hires": True}}})
    assert second["is_default"] is False
    rules = second["rules_json"]
    assert rules["palette"] == ["#aabbcc", "#102030"]
    assert rules["size"]["aspect"] == "16:9"
    assert rules["lighting"]["night"] == {"description": "neon", "color_temperature_k": None, "tint": "#ff00aa"}
    assert rules["lighting"]["dawn"] == StyleRules().lighting.dawn.model_dump(mode="json")
    assert rules["stage_defaults"]["advanced"] == {"steps": 12, "sampler": "euler", "hires": True}

    got = client.call("style_guides.get", slug="alpha", style_guide_id=second["id"])
    assert got == second
    listed = client.call("style_guides.list", slug="alpha")
    assert [g["id"] for g in listed["items"]] == [second["id"], first["id"]] and listed["next_cursor"] is None

    # A guide read back can be sent back unchanged (the derived aspect included).
    same = client.call("style_guides.update", slug="alpha", style_guide_id=second["id"], rules_json=got["rules_json"])
    assert same["rules_json"] == got["rules_json"] and same["updated_at"] == got["updated_at"]
    changed = client.call("style_guides.update", slug="alpha", style_guide_id=second["id"], name="Night 2",
                          rules_json={"max_chroma": 0.3})
    assert changed["name"] == "Night 2" and changed["description"] == "dark"
    assert changed["rules_json"] == StyleRules(max_chroma=0.3).model_dump(mode="json")  # replaced as a whole

    made = client.call("style_guides.set_default", slug="alpha", style_guide_id=second["id"])
    assert made["is_default"] is True
    assert client.call("style_guides.get", slug="alpha", style_guide_id=first["id"])["is_default"] is False
    assert client.error("style_guides.create", slug="alpha", name="Day", is_default=1).name == "invalid_params"
    third = client.call("style_guides.create", slug="alpha", name="Day", is_default=True)
    assert [r[0] for r in db_rows(project, "SELECT id FROM style_guides WHERE is_default")] == [third["id"]]
    assert app.projects.open("alpha").store.read(repo.default_style_guide, project["id"])["id"] == third["id"]

    assert client.error("style_guides.get", slug="alpha", style_guide_id=str(uuid.uuid4())).name == "not_found"
    assert audit_codes(client) == ["project.created", "style_guide.created", "style_guide.created",
                                   "style_guide.updated", "style_guide.updated", "style_guide.default_set",
                                   "style_guide.created"]
    assert app.events.drain()
    names = [n for n, _ in events]
    assert names == ["style_guide.created", "style_guide.created", "style_guide.updated", "style_guide.updated",
                     "style_guide.default_set", "style_guide.created"]
    assert events[0][1]["id"] == first["id"] and events[0][1]["slug"] == "alpha"


@pytest.mark.parametrize("rules, loc", [
    ({"palette": ["#12345"]}, ["rules_json", "palette", 0]),
    ({"palette": ["#000000", "red"]}, ["rules_json", "palette", 1]),
    ({"max_chroma": 0.41}, ["rules_json", "max_chroma"]),
    ({"max_chroma": -0.01}, ["rules_json", "max_chroma"]),
    ({"colour": "#000000"}, ["rules_json", "colour"]),
    ({"lighting": {"noon": {"description": "x"}}}, ["rules_json", "lighting", "noon"]),
    ({"lighting": {"dusk": {"description": "x", "tint": "orange"}}}, ["rules_json", "lighting", "dusk", "tint"]),
    ({"lighting": {"day": {"description": "x", "color_temperature_k": 500}}},
     ["rules_json", "lighting", "day", "color_temperature_k"]),
    ({"size": {"width": 1004, "height": 512}}, ["rules_json", "size", "width"]),
    ({"size": {"width": 8192, "height": 512}}, ["rules_json", "size", "width"]),
    ({"size": {"width": 1024, "height": 576, "aspect": "4:3"}}, ["rules_json", "size"]),
    ({"size": {"width": "768"}}, ["rules_json", "size", "width"]),  # numbers are JSON numbers, as the schema says
    ({"size": {"width": True}}, ["rules_json", "size", "width"]),
    ({"size": {"width": 768.5}}, ["rules_json", "size", "width"]),
    ({"max_chroma": "0.2"}, ["rules_json", "max_chroma"]),
    ({"stage_defaults": {"upscale": {}}}, ["rules_json", "stage_defaults", "upscale"]),
    ({"qa": {"no_such_threshold": 1}}, ["rules_json", "qa", "no_such_threshold"]),
])
def test_invalid_rules_are_refused_with_their_path_and_change_nothing(client: Client, project: dict, rules, loc):
    guide = client.call("style_guides.create", slug="alpha", name="Base")
    before_audit = audit_codes(client)

    err = client.error("style_guides.create", slug="alpha", name="Bad", rules_json=rules)
    assert err.name == "invalid_params" and loc in error_locs(err), err.details
    err = client.error("style_guides.update", slug="alpha", style_guide_id=guide["id"], name="Renamed",
                       rules_json=rules)
    assert err.name == "invalid_params" and loc in error_locs(err), err.details

    assert client.call("style_guides.list", slug="alpha")["items"] == [guide]
    assert audit_codes(client) == before_audit


def test_one_default_under_concurrent_set_default(client: Client, project: dict):
    guides = [client.call("style_guides.create", slug="alpha", name=f"G{i}")["id"] for i in range(6)]
    barrier = threading.Barrier(len(guides))
    errors: list[BaseException] = []

    def flip(guide_id: str) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                client.call("style_guides.set_default", slug="alpha", style_guide_id=guide_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(g,)) for g in guides]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    defaults = db_rows(project, "SELECT id FROM style_guides WHERE is_default")
    assert len(defaults) == 1 and defaults[0][0] in guides
    assert audit_codes(client).count("style_guide.default_set") == 30


# --- reference sets ---


def test_reference_sets_and_weighted_items(client: Client, project: dict, app: App):
    asset_a, asset_b = add_asset(app, "alpha"), add_asset(app, "alpha")
    ref_set = client.call("reference_sets.create", slug="alpha", name="Ana refs", kind="character",
                          metadata_json={"source": "sketchbook"})
    assert ref_set["items"] == [] and ref_set["kind"] == "character"
    other = client.call("reference_sets.create", slug="alpha", name="Mood", kind="lighting")

    item = client.call("reference_sets.add_item", slug="alpha", reference_set_id=ref_set["id"], asset_id=asset_a,
                       weight=2.123456, notes="front view")
    assert item["weight"] == 2.1235 and item["asset_id"] == asset_a and item["notes"] == "front view"
    client.call("reference_sets.add_item", slug="alpha", reference_set_id=ref_set["id"], asset_id=asset_b)
    client.call("reference_sets.add_item", slug="alpha", reference_set_id=other["id"], asset_id=asset_a,
                weight=9999.9999)

    got = client.call("reference_sets.get", slug="alpha", reference_set_id=ref_set["id"])
    assert [(i["asset_id"], i["weight"]) for i in got["items"]] == [(asset_a, 2.1235), (asset_b, 1.0)]
    assert got["items"][0]["id"] == item["id"]
    assert [s["id"] for s in client.call("reference_sets.list", slug="alpha")["items"]] == [other["id"], ref_set["id"]]
    assert [s["id"] for s in client.call("reference_sets.list", slug="alpha", kind="lighting")["items"]] == [other["id"]]

    before = audit_codes(client)
    # A duplicate is a conflict and changes nothing (remove it first to change weight or notes).
    dup = client.error("reference_sets.add_item", slug="alpha", reference_set_id=ref_set["id"], asset_id=asset_a,
                       weight=5)
    assert dup.name == "conflict" and dup.details["item_id"] == item["id"]
    for weight in (0, -1, 0.00001, 10000, 9999.99995, "2"):
        err = client.error("reference_sets.add_item", slug="alpha", reference_set_id=ref_set["id"],
                           asset_id=add_asset(app, "alpha"), weight=weight)
        assert err.name == "invalid_params" and ["weight"] in error_locs(err)
    assert client.error("reference_sets.add_item", slug="alpha", reference_set_id=ref_set["id"],
                        asset_id=str(uuid.uuid4())).name == "not_found"
    assert client.error("reference_sets.add_item", slug="alpha", reference_set_id=str(uuid.uuid4()),
                        asset_id=asset_a).name == "not_found"
    assert client.error("reference_sets.create", slug="alpha", name="x", kind="mood").name == "invalid_params"
    assert audit_codes(client) == before

    removed = client.call("reference_sets.remove_item", slug="alpha", reference_set_id=ref_set["id"],
                          asset_id=asset_a)
    assert removed["id"] == item["id"]
    assert [i["asset_id"] for i in client.call("reference_sets.get", slug="alpha",
                                               reference_set_id=ref_set["id"])["items"]] == [asset_b]
    assert client.error("reference_sets.remove_item", slug="alpha", reference_set_id=ref_set["id"],
                        asset_id=asset_a).name == "not_found"
    # The asset itself stays, and stays in the other set.
    assert client.call("assets.get", slug="alpha", asset_id=asset_a)["id"] == asset_a
    assert len(client.call("reference_sets.get", slug="alpha", reference_set_id=other["id"])["items"]) == 1
    assert audit_codes(client)[1:] == ["reference_set.created", "reference_set.created", "reference_set.item_added",
                                       "reference_set.item_added", "reference_set.item_added",
                                       "reference_set.item_removed"]


def test_an_asset_of_another_project_is_refused(client: Client, project: dict, app: App):
    client.call("projects.create", slug="beta", name="Beta")
    foreign = add_asset(app, "beta")
    ref_set = client.call("reference_sets.create", slug="alpha", name="refs", kind="style")
    err = client.error("reference_sets.add_item", slug="alpha", reference_set_id=ref_set["id"], asset_id=foreign)
    assert err.name == "not_found" and "not an asset of this project" in err.message
    assert err.details["asset_id"] == foreign
    assert client.call("reference_sets.get", slug="alpha", reference_set_id=ref_set["id"])["items"] == []
    assert db_rows(project, "SELECT count(*) FROM reference_items") == [(0,)]
    # The other project's set cannot be reached through this project either.
    beta_set = client.call("reference_sets.create", slug="beta", name="refs", kind="style")
    assert client.error("reference_sets.get", slug="alpha", reference_set_id=beta_set["id"]).name == "not_found"
    assert audit_codes(client) == ["project.created", "reference_set.created"]


# --- characters ---


def test_characters_code_unique_and_immutable(client: Client, project: dict, app: App):
    ref_set = client.call("reference_sets.create", slug="alpha", name="Ana refs", kind="character")
    ana = client.call("characters.create", slug="alpha", code="ana", name="Ana", bio="A courier.",
                      identity_constraints_json={"appearance": "short red hair", "palette": ["#C0392B"],
                                                 "outfit": "green raincoat", "reference_set_id": ref_set["id"]})
    assert ana["code"] == "ana"
    assert ana["identity_constraints_json"] == {"appearance": "short red hair", "palette": ["#c0392b"],
                                                "outfit": "green raincoat", "reference_set_id": ref_set["id"]}
    bo = client.call("characters.create", slug="alpha", code="bo-2", name="Bo")
    assert bo["identity_constraints_json"] == {"appearance": "", "palette": [], "outfit": "",
                                               "reference_set_id": None}
    before = audit_codes(client)

    assert client.error("characters.create", slug="alpha", code="ana", name="Other Ana").name == "conflict"
    for code in ("Ana", "ana!", "-ana", "", "a" * 65):
        err = client.error("characters.create", slug="alpha", code=code, name="X")
        assert err.name == "invalid_params" and ["code"] in error_locs(err)
    err = client.error("characters.create", slug="alpha", code="cy", name="Cy",
                       identity_constraints_json={"palette": ["blue"]})
    assert ["identity_constraints_json", "palette", 0] in error_locs(err)
    err = client.error("characters.create", slug="alpha", code="cy", name="Cy",
                       identity_constraints_json={"reference_set_id": str(uuid.uuid4())})
    assert err.name == "not_found"
    err = client.error("characters.create", slug="alpha", code="cy", name="Cy", identity_constraints_json={"hat": 1})
    assert ["identity_constraints_json", "hat"] in error_locs(err)
    err = client.error("characters.update", slug="alpha", character_id=ana["id"], code="anna")
    assert err.name == "invalid_params" and "immutable" in err.message
    assert client.error("characters.update", slug="alpha", character_id=ana["id"], identity_constraints_json={
        "reference_set_id": str(uuid.uuid4())}).name == "not_found"
    assert audit_codes(client) == before
    assert db_rows(project, "SELECT code FROM characters ORDER BY code") == [("ana",), ("bo-2",)]

    updated = client.call("characters.update", slug="alpha", character_id=ana["id"], name="Ana Lind",
                          identity_constraints_json={"appearance": "short red hair, freckles"})
    assert updated["code"] == "ana" and updated["name"] == "Ana Lind" and updated["bio"] == "A courier."
    assert updated["identity_constraints_json"]["appearance"] == "short red hair, freckles"
    assert updated["identity_constraints_json"]["reference_set_id"] is None  # replaced as a whole
    assert client.call("characters.get", slug="alpha", character_id=ana["id"]) == updated
    assert [c["code"] for c in client.call("characters.list", slug="alpha")["items"]] == ["bo-2", "ana"]
    assert client.error("characters.get", slug="alpha", character_id=str(uuid.uuid4())).name == "not_found"
    assert audit_codes(client)[-1] == "character.updated"
    assert audit_codes(client).count("character.created") == 2


# --- prompt templates ---


def test_template_versions_deactivate_and_never_rewrite(client: Client, project: dict):
    v1 = client.call("prompt_templates.create", slug="alpha", name="default", stage="style_lock",
                     template_text="{scene}, flat colours")
    assert (v1["version"], v1["is_active"]) == (1, True)
    light = client.call("prompt_templates.create", slug="alpha", name="default", stage="light_time",
                        template_text="{scene} at {time_of_day}")
    v2 = client.call("prompt_templates.create", slug="alpha", name="default", stage="style_lock",
                     template_text="{scene}, flat colours, {palette}")
    other_name = client.call("prompt_templates.create", slug="alpha", name="poster", stage="style_lock",
                             template_text="poster of {scene}")
    assert (v2["version"], light["version"], other_name["version"]) == (2, 1, 1)

    rows = db_rows(project, "SELECT id, template_text, version, is_active, created_at FROM prompt_templates "
                            f"WHERE id = '{v1['id']}'")
    assert rows[0][1:4] == ("{scene}, flat colours", 1, 0)  # deactivated, its text untouched
    v3 = client.call("prompt_templates.create", slug="alpha", name="default", stage="style_lock",
                     template_text="{scene}")
    assert v3["version"] == 3
    assert db_rows(project, f"SELECT template_text, version FROM prompt_templates WHERE id = '{v2['id']}'") == \
        [("{scene}, flat colours, {palette}", 2)]

    listed = client.call("prompt_templates.list", slug="alpha", stage="style_lock", name="default")["items"]
    assert [(t["version"], t["is_active"]) for t in listed] == [(3, True), (2, False), (1, False)]
    active = client.call("prompt_templates.list", slug="alpha", active_only=True)["items"]
    assert {(t["name"], t["stage"], t["version"]) for t in active} == {
        ("default", "style_lock", 3), ("default", "light_time", 1), ("poster", "style_lock", 1)}
    assert len(client.call("prompt_templates.list", slug="alpha")["items"]) == 5
    assert audit_codes(client).count("prompt_template.created") == 5


@pytest.mark.parametrize("text, placeholder", [
    ("{scene} in {colour}", "colour"),
    ("{scene!r}", "scene!r"),
    ("{}", ""),
    ("{character.ana.shoes}", "character.ana.shoes"),
    ("{Scene}", "Scene"),
])
def test_unknown_placeholder_is_refused_at_create_and_render(client: Client, project: dict, text, placeholder):
    err = client.error("prompt_templates.create", slug="alpha", name="mine", stage="weather_effects",
                       template_text=text)
    assert err.name == "invalid_params"
    assert (err.details["placeholder"], err.details["template"], err.details["stage"]) == \
        (placeholder, "mine", "weather_effects")
    assert f"{{{placeholder}}}" in err.message and "mine" in err.message and "weather_effects" in err.message
    with pytest.raises(InvalidParams) as info:
        templates.render(text, {"scene": "x"}, name="mine", stage="weather_effects")
    assert info.value.details["placeholder"] == placeholder
    assert client.call("prompt_templates.list", slug="alpha")["items"] == []
    assert audit_codes(client) == ["project.created"]


def test_bad_braces_and_unknown_character_codes(client: Client, project: dict):
    for text in ("{scene", "scene}", "{{scene}", "a { b }"):
        err = client.error("prompt_templates.create", slug="alpha", name="mine", stage="advanced", template_text=text)
        assert err.name == "invalid_params" and ["template_text"] in error_locs(err), text
    # A well-formed placeholder naming a character the project lacks: the template is fine, the character is not.
    err = client.error("prompt_templates.create", slug="alpha", name="mine", stage="advanced",
                       template_text="{character.zed.name} waves")
    assert err.name == "not_found" and err.details["character_codes"] == ["zed"]
    client.call("characters.create", slug="alpha", code="zed", name="Zed")
    made = client.call("prompt_templates.create", slug="alpha", name="mine", stage="advanced",
                       template_text="{character.zed.name} waves {{hello}}")
    assert made["version"] == 1
    assert audit_codes(client) == ["project.created", "character.created", "prompt_template.created"]


def test_render_from_shot_style_guide_and_characters(client: Client, project: dict, app: App):
    handle = app.projects.open("alpha")
    assert handle.store.read(repo.resolve_style_guide, handle.id, None) == DEFAULT_STYLE_GUIDE
    guide = client.call("style_guides.create", slug="alpha", name="Harbour", description="watercolour, soft edges",
                        rules_json={"palette": ["#112233", "#445566"],
                                    "lighting": {"dusk": {"description": "amber glow"}}})
    client.call("characters.create", slug="alpha", code="ana", name="Ana",
                identity_constraints_json={"appearance": "red hair", "outfit": "raincoat", "palette": ["#ff0000"]})
    client.call("characters.create", slug="alpha", code="bo", name="Bo", bio="old sailor")
    client.call("prompt_templates.create", slug="alpha", name="default", stage="light_time",
                template_text="{scene} at {time_of_day}, {lighting}; {character.bo.bio}, {character.ana.palette}")
    assert handle.store.read(repo.resolve_style_guide, handle.id, None)["id"] == guide["id"]
    with pytest.raises(NotFound):
        handle.store.read(repo.resolve_style_guide, handle.id, str(uuid.uuid4()))
    characters = handle.store.read(repo.all_characters, handle.id)
    chosen = handle.store.read(repo.active_templates, handle.id, "default")
    assert set(chosen) == set(STAGES)
    assert chosen["light_time"]["version"] == 1
    assert chosen["style_lock"] == {**chosen["style_lock"], "version": 0,
                                    "template_text": DEFAULT_TEMPLATES["style_lock"]}

    shot = {"job_key": "s01", "scene": "a quay in the rain", "time_of_day": "dusk", "weather": "rain",
            "characters": ["ana", "bo"]}
    context = templates.build_context(shot, guide, characters)
    assert templates.render(chosen["light_time"]["template_text"], context) == \
        "a quay in the rain at dusk, amber glow; old sailor, #ff0000"
    assert templates.render(chosen["style_lock"]["template_text"], context) == (
        "a quay in the rain. Characters: Ana (red hair; wearing raincoat); Bo. Style: watercolour, soft edges. "
        "Palette: #112233, #445566.")
    assert templates.render("{weather}, {character_names}, {job_key}", context) == "rain, Ana, Bo, s01"

    # No guide: the embedded default rules; no characters in the shot; missing time and weather take defaults.
    bare = templates.build_context({"job_key": "s02", "scene": "an empty street"}, None, characters)
    assert templates.render("{scene}: {lighting}, {weather}, {characters}", bare) == \
        f"an empty street: {StyleRules().lighting.day.description}, clear, no characters"
    with pytest.raises(InvalidParams) as info:
        templates.build_context({**shot, "characters": ["ana", "cy"]}, guide, characters)
    assert info.value.details["character_codes"] == ["cy"]
    with pytest.raises(InvalidParams):
        templates.build_context({**shot, "time_of_day": "noon"}, guide, characters)
    with pytest.raises(InvalidParams) as info:
        templates.render("{character.cy.name}", context, name="mine", stage="advanced")
    assert "no character 'cy'" in info.value.message


def test_embedded_defaults_are_complete_and_valid():
    assert parse_rules({}) == StyleRules() == parse_rules(DEFAULT_STYLE_GUIDE["rules_json"])
    assert set(DEFAULT_TEMPLATES) == set(STAGES)
    for stage, text in DEFAULT_TEMPLATES.items():
        assert set(templates.validate(text, stage)) <= set(templates.PLACEHOLDERS)
        assert templates.render(text, templates.build_context({"job_key": "k", "scene": "a hill"}, None, []))
    schema = StyleRules.model_json_schema()
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"StyleRules.{name} has no description"


def test_loading_the_knowledge_commands_does_not_load_the_imaging_stack():
    """The registry imports these modules at every start; numpy and Pillow wait for the first style guide."""
    code = ("import sys; import iat.commands.style_guides, iat.commands.reference_sets, iat.commands.characters, "
            "iat.commands.prompt_templates; print(sorted(m for m in ('numpy', 'PIL', 'peewee') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
