"""The embedded defaults: a style guide's rules and one prompt template per stage, used by the demo and by any
run in a project that has no style guide or no active template of the name it asks for.

They are ordinary data, checked by the same code as user data when this module is imported, so a broken
default fails at once (and in the tests), not in a run.
"""

from __future__ import annotations

from iat.knowledge import templates
from iat.knowledge.rules import STAGES, StyleRules, normalise

DEFAULT_TEMPLATE_NAME = "default"

DEFAULT_RULES = StyleRules()

DEFAULT_STYLE_GUIDE = {
    "id": None,
    "name": "Embedded default",
    "description": "clean flat-colour illustration, bold simple shapes, soft shading, consistent line weight",
    "rules_json": normalise(DEFAULT_RULES),
    "is_default": True,
}

DEFAULT_TEMPLATES: dict[str, str] = {
    "style_lock": "{scene}. Characters: {characters}. Style: {style}. Palette: {palette}.",
    "light_time": "{scene}, at {time_of_day}: {lighting}. Same style, composition and characters.",
    "weather_effects": "{scene}, {weather} weather, {time_of_day} light. Same style, composition and characters.",
    "advanced": "{scene}. Refine details and edges, characters on model, palette {palette}.",
}

if set(DEFAULT_TEMPLATES) != set(STAGES):
    raise RuntimeError("the embedded templates must cover every stage")
for _stage, _text in DEFAULT_TEMPLATES.items():
    templates.validate(_text, _stage, DEFAULT_TEMPLATE_NAME)


def default_template(stage: str) -> dict:
    """The embedded template of a stage, shaped like a prompt_templates row (id None, version 0)."""
    return {"id": None, "project_id": None, "name": DEFAULT_TEMPLATE_NAME, "stage": stage,
            "template_text": DEFAULT_TEMPLATES[stage], "version": 0, "is_active": True, "created_at": None}
