"""Prompt templates: text with named placeholders, filled from the shot, the style guide and the characters.

Syntax: `{name}` is a placeholder; `{{` and `}}` are literal braces; any other brace is an error. A template is
checked when it is stored (`validate`) and again when a run renders it (`render`), so a bad one is refused at
create or plan time with the placeholder, the template and the stage named, never half-way through a run.

Placeholders (the same set in every stage):

    {scene}            the shot's scene description
    {time_of_day}      dawn | day | dusk | night (day when the shot gives none)
    {weather}          the shot's weather, e.g. rain, snow, fog (clear when the shot gives none)
    {lighting}         the style guide's lighting words for the shot's time of day
    {characters}       the shot's characters: "Name (appearance; wearing outfit)", joined by "; "
    {character_names}  the shot's character names, joined by ", "
    {style}            the style guide's description (its name when the description is empty)
    {palette}          the style guide's palette, "#rrggbb, #rrggbb, ..."
    {negative_prompt}  the style guide's negative prompt
    {job_key}          the shot's key in its shot list

    {character.<code>.name | appearance | outfit | palette | bio}
                       one field of the project's character with that code, in the shot or not

A rendered prompt has its whitespace collapsed and the empty list items an empty value leaves (", ,") removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from iat.errors import InvalidParams, NotFound
from iat.knowledge.rules import STAGES, TIMES_OF_DAY, StyleRules, parse_rules

PLACEHOLDERS: dict[str, str] = {
    "scene": "the shot's scene description",
    "time_of_day": "dawn | day | dusk | night (day when the shot gives none)",
    "weather": "the shot's weather (clear when the shot gives none)",
    "lighting": "the style guide's lighting words for the shot's time of day",
    "characters": "the shot's characters: 'Name (appearance; wearing outfit)' joined by '; '",
    "character_names": "the shot's character names joined by ', '",
    "style": "the style guide's description (its name when the description is empty)",
    "palette": "the style guide's palette, '#rrggbb, ...'",
    "negative_prompt": "the style guide's negative prompt",
    "job_key": "the shot's key in its shot list",
}
CHARACTER_FIELDS: dict[str, str] = {
    "name": "the character's name",
    "appearance": "its appearance constraint",
    "outfit": "its outfit constraint",
    "palette": "its palette, '#rrggbb, ...'",
    "bio": "its bio",
}
CODE_PATTERN = r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?"
MAX_TEMPLATE_CHARS = 20_000

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_CHARACTER_REF = re.compile(rf"^character\.({CODE_PATTERN})\.({'|'.join(CHARACTER_FIELDS)})$")

# The whole grammar as one regular expression, for the JSON Schema of template_text (documentation, fuzzers).
TEMPLATE_PATTERN = ("^(?:[^{}]|\\{\\{|\\}\\}|\\{(?:" + "|".join(PLACEHOLDERS)
                    + "|character\\." + CODE_PATTERN + "\\.(?:" + "|".join(CHARACTER_FIELDS) + "))\\})*$")


def _error(message: str, kind: str, name: str | None, stage: str | None, **details: Any) -> InvalidParams:
    where = f" in template {name!r}" if name else ""
    where += f" (stage {stage})" if stage else ""
    return InvalidParams(f"{message}{where}", details={
        "template": name, "stage": stage, **details,
        "errors": [{"loc": ["template_text"], "msg": message, "type": kind}],
    })


def _tokens(text: str, name: str | None, stage: str | None) -> list[tuple[str, str]]:
    """[("text", literal) | ("field", placeholder)], or InvalidParams at the first bad brace or placeholder."""
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            out.append(("text", text[pos:match.start()]))
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            out.append(("text", token[0]))
        elif token in ("{", "}"):
            raise _error(f"unmatched {token!r} at character {match.start()} (write {token * 2} for a literal brace)",
                         "bad_brace", name, stage, position=match.start())
        else:
            field = match.group(1)
            if field not in PLACEHOLDERS and not _CHARACTER_REF.match(field):
                raise _error(f"unknown placeholder {token}", "unknown_placeholder", name, stage,
                             placeholder=field, position=match.start(),
                             known=[*PLACEHOLDERS, "character.<code>.<" + "|".join(CHARACTER_FIELDS) + ">"])
            out.append(("field", field))
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def placeholders(text: str, name: str | None = None, stage: str | None = None) -> list[str]:
    """The placeholders of a template in order of first use, each once; InvalidParams when it is malformed."""
    seen: dict[str, None] = {}
    for kind, value in _tokens(text, name, stage):
        if kind == "field":
            seen.setdefault(value, None)
    return list(seen)


def character_codes(text: str) -> list[str]:
    """The character codes a template names through {character.<code>.<field>}."""
    codes: dict[str, None] = {}
    for field in placeholders(text):
        match = _CHARACTER_REF.match(field)
        if match:
            codes.setdefault(match.group(1), None)
    return list(codes)


def validate(text: str, stage: str, name: str | None = None, known_codes: Iterable[str] | None = None) -> list[str]:
    """Checks a template for `stage`; returns its placeholders. With known_codes, a character code outside them
    is NotFound (the template may be fine; the project lacks that character)."""
    if stage not in STAGES:
        raise _error(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}", "unknown_stage", name, stage)
    if not text:
        raise _error("a template must not be empty", "empty_template", name, stage)
    if len(text) > MAX_TEMPLATE_CHARS:
        raise _error(f"a template is at most {MAX_TEMPLATE_CHARS} characters", "too_long", name, stage)
    fields = placeholders(text, name, stage)
    if known_codes is not None:
        known = set(known_codes)
        missing = [c for c in character_codes(text) if c not in known]
        if missing:
            where = f" (template {name!r}, stage {stage})" if name else f" (stage {stage})"
            raise NotFound(f"the template names character {missing[0]!r}, which this project does not have{where}",
                           details={"template": name, "stage": stage, "character_codes": missing})
    return fields


def render(text: str, context: Mapping[str, str], *, name: str | None = None, stage: str | None = None) -> str:
    """Fills a template from a context (see build_context); InvalidParams names a placeholder it cannot fill."""
    parts: list[str] = []
    for kind, value in _tokens(text, name, stage):
        if kind == "text":
            parts.append(value)
        elif value in context:
            parts.append(str(context[value]))
        else:
            match = _CHARACTER_REF.match(value)
            why = f"no character {match.group(1)!r} in this project" if match else "the context has no value for it"
            raise _error(f"placeholder {{{value}}} cannot be filled: {why}", "unfilled_placeholder", name, stage,
                         placeholder=value)
    return tidy("".join(parts))


def tidy(prompt: str) -> str:
    prompt = re.sub(r"\s+", " ", prompt)
    prompt = re.sub(r"\s+([,.;:])", r"\1", prompt)
    prompt = re.sub(r"([,;])(?:\s*[,;])+", r"\1", prompt)
    return prompt.strip(" ,;")


def _describe(character: Mapping[str, Any]) -> str:
    identity = character.get("identity_constraints_json") or {}
    details = [identity.get("appearance", "").strip()]
    outfit = identity.get("outfit", "").strip()
    if outfit:
        details.append(f"wearing {outfit}")
    details = [d for d in details if d]
    return f"{character['name']} ({'; '.join(details)})" if details else character["name"]


def build_context(shot: Mapping[str, Any], style_guide: Mapping[str, Any] | None,
                  characters: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The values of every placeholder for one shot.

    shot: job_key, scene, time_of_day (None: day), weather (None: clear), characters (a list of codes).
    style_guide: a style_guides row (name, description, rules_json), or None for the embedded default rules.
    characters: the project's characters rows (code, name, bio, identity_constraints_json).
    A shot character that is not among `characters` is InvalidParams naming it.
    """
    if style_guide is None:
        from iat.knowledge.defaults import DEFAULT_STYLE_GUIDE

        style_guide = DEFAULT_STYLE_GUIDE
    rules = style_guide.get("rules_json")
    rules = rules if isinstance(rules, StyleRules) else parse_rules(rules)
    by_code = {c["code"]: c for c in characters}
    codes = list(shot.get("characters") or [])
    unknown = [c for c in codes if c not in by_code]
    if unknown:
        raise InvalidParams(f"shot {shot.get('job_key')!r} names unknown character {unknown[0]!r}",
                            details={"job_key": shot.get("job_key"), "character_codes": unknown,
                                     "errors": [{"loc": ["characters"], "msg": "unknown character code",
                                                 "type": "unknown_character"}]})
    time_of_day = shot.get("time_of_day") or "day"
    if time_of_day not in TIMES_OF_DAY:
        raise InvalidParams(f"shot {shot.get('job_key')!r}: unknown time of day {time_of_day!r}; "
                            f"one of {', '.join(TIMES_OF_DAY)}",
                            details={"job_key": shot.get("job_key"), "errors": [
                                {"loc": ["time_of_day"], "msg": "unknown time of day", "type": "literal_error"}]})
    in_shot = [by_code[c] for c in codes]
    context = {
        "scene": str(shot.get("scene") or ""),
        "time_of_day": time_of_day,
        "weather": shot.get("weather") or "clear",
        "lighting": rules.lighting.for_time(time_of_day).description,
        "characters": "; ".join(_describe(c) for c in in_shot) if in_shot else "no characters",
        "character_names": ", ".join(c["name"] for c in in_shot),
        "style": (style_guide.get("description") or "").strip() or style_guide.get("name", ""),
        "palette": ", ".join(rules.palette),
        "negative_prompt": rules.negative_prompt,
        "job_key": str(shot.get("job_key") or ""),
    }
    for code, character in by_code.items():
        identity = character.get("identity_constraints_json") or {}
        context[f"character.{code}.name"] = character["name"]
        context[f"character.{code}.appearance"] = identity.get("appearance", "")
        context[f"character.{code}.outfit"] = identity.get("outfit", "")
        context[f"character.{code}.palette"] = ", ".join(identity.get("palette", []))
        context[f"character.{code}.bio"] = character.get("bio", "")
    return context
