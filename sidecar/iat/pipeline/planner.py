"""Planning a run: shots, style guide, characters and templates in; rendered prompts, seeds, a cost estimate and a
settings snapshot out. Nothing is written here and no provider is called, so a bad shot list or template is
refused before any row exists.

The snapshot (`runs.settings_snapshot_json`) holds everything a run needs, so `runs.replay` can run it again
from the snapshot alone, even after the project's style guide, characters or templates changed:

    format, origin_run_id (the run whose recipe this is), provider, model, stages, candidates, seed,
    style_guide {id, name, description, rules_json}, characters [{code, name, bio, identity_constraints_json}],
    templates {stage: {id, name, version, template_text}}, post {background_engines, upscale_factor,
    color_correct}, jobs [{job_key, shot, prompts {stage: text}, negative_prompt, seeds [per candidate]}],
    estimate {units, cost_usd, currency}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from iat.errors import InvalidParams
from iat.knowledge import templates as tpl
from iat.knowledge.rules import STAGES, parse_rules
from iat.pipeline.shots import Shot

SNAPSHOT_FORMAT = 1
DEFAULT_STAGES = ("style_lock", "light_time", "weather_effects")
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Knowledge:
    """What a plan reads from the project: the style guide row (None: the embedded default), every character,
    the active template per stage."""

    style_guide: dict | None
    characters: list[dict]
    templates: dict[str, dict]


def check_stages(stages: list[str] | None) -> tuple[str, ...]:
    """Stages in pipeline order, style_lock first, each once."""
    chosen = tuple(stages) if stages else DEFAULT_STAGES
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise InvalidParams(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}",
                            details={"errors": [{"loc": ["stages"], "msg": "unknown stage", "type": "literal_error"}]})
    if chosen[0] != "style_lock" or len(set(chosen)) != len(chosen) or list(chosen) != sorted(chosen, key=STAGES.index):
        raise InvalidParams("stages must start with style_lock and follow the pipeline order "
                            f"({', '.join(STAGES)}), each once",
                            details={"errors": [{"loc": ["stages"], "msg": "bad stage order", "type": "value_error"}]})
    return chosen


def candidate_seed(base: int, job_key: str, index: int) -> int:
    """A candidate's seed: a function of the run's seed, the job and the candidate only (stable on resume and
    replay, independent of the order work is done in)."""
    digest = hashlib.sha256(f"{base}:{job_key}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def _guide_snapshot(guide: dict | None) -> dict:
    from iat.knowledge.defaults import DEFAULT_STYLE_GUIDE

    guide = guide or DEFAULT_STYLE_GUIDE
    rules = parse_rules(guide.get("rules_json"))
    return {"id": guide.get("id"), "name": guide["name"], "description": guide.get("description", ""),
            "rules_json": rules.model_dump(mode="json")}


def build_snapshot(*, shots: list[Shot], knowledge: Knowledge, provider_code: str, model: str,
                   stages: tuple[str, ...], candidates: int, seed: int, post: dict) -> dict:
    """The run's recipe; every prompt rendered now (an unknown placeholder or character is invalid_params)."""
    guide = _guide_snapshot(knowledge.style_guide)
    characters = [{k: c[k] for k in ("code", "name", "bio", "identity_constraints_json")}
                  for c in sorted(knowledge.characters, key=lambda c: c["code"])]
    used_templates = {s: knowledge.templates[s] for s in stages}
    rules = parse_rules(guide["rules_json"])
    jobs = []
    for shot in shots:
        context = tpl.build_context(shot.model_dump(), guide, characters)
        prompts = {stage: tpl.render(t["template_text"], context, name=t["name"], stage=stage)
                   for stage, t in used_templates.items()}
        jobs.append({"job_key": shot.job_key, "shot": shot.model_dump(mode="json"), "prompts": prompts,
                     "negative_prompt": rules.negative_prompt,
                     "seeds": [candidate_seed(seed, shot.job_key, k) for k in range(candidates)]})
    return {
        "format": SNAPSHOT_FORMAT,
        "origin_run_id": None,  # set when the run row is made
        "provider": provider_code,
        "model": model,
        "stages": list(stages),
        "candidates": candidates,
        "seed": seed,
        "style_guide": guide,
        "characters": characters,
        "templates": {s: {k: t.get(k) for k in ("id", "name", "version", "template_text")}
                      for s, t in used_templates.items()},
        "post": post,
        "jobs": jobs,
    }


def scene_of(snapshot: dict, job: dict) -> dict:
    """The structured scene a provider draws for one job (the preview renderer's input)."""
    rules = parse_rules(snapshot["style_guide"]["rules_json"])
    by_code = {c["code"]: c for c in snapshot["characters"]}
    shot = job["shot"]
    cast = []
    for code in shot["characters"]:
        identity = by_code[code].get("identity_constraints_json") or {}
        cast.append({"code": code, "name": by_code[code]["name"], "palette": identity.get("palette", []),
                     "appearance": identity.get("appearance", ""), "outfit": identity.get("outfit", "")})
    return {"text": shot["scene"], "palette": rules.palette, "characters": cast,
            "time_of_day": shot["time_of_day"], "weather": shot["weather"]}


def output_size(snapshot: dict) -> tuple[int, int]:
    size = parse_rules(snapshot["style_guide"]["rules_json"]).size
    return size.width, size.height


def stage_params(snapshot: dict, stage: str) -> dict[str, Any]:
    return parse_rules(snapshot["style_guide"]["rules_json"]).stage_defaults.for_stage(stage)
