"""The OpenAPI document and the server agree on the rules that tie fields together or name pluggable parts:
a payload the document allows is one the params model accepts, and one it forbids is refused (scripts/contract
fuzzes the same over HTTP; these pin the cases down)."""

from __future__ import annotations

import uuid

import jsonschema
import pytest
from pydantic import ValidationError

from iat.app import App
from iat.commands.runs import CandidatesParams, RunParams
from iat.commands.style_guides import StyleGuideCreate
from iat.registry import load_commands
from iat.providers import default_providers
from iat.rpc.openapi import openapi_document

SHOT = {"job_key": "a", "scene": "a street"}
RUN_ID, JOB_ID = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(scope="module")
def doc() -> dict:
    return openapi_document(load_commands())


def _allows(doc: dict, schema: dict, value) -> bool:
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"], **schema}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker()).is_valid(value)


def _accepts(model, value: dict) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def _body(doc: dict, method: str, path: str) -> dict:
    return doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


RUN_BODIES = [
    {"shots": [SHOT]},
    {"shots_csv": "job_key,scene\na,b\n"},
    {"shots": [SHOT], "shots_csv": None},
    {"shots": None, "shots_csv": "job_key,scene\na,b\n"},
    {},
    {"shots": None, "shots_csv": None},
    {"shots": [SHOT], "shots_csv": "job_key,scene\na,b\n"},
    {"shots": [{**SHOT, "cutout": 0}]},
    {"shots": [{**SHOT, "cutout": "yes"}]},
    {"shots": [{**SHOT, "cutout": True}], "candidates": 2.0, "seed": 3.0, "color_correct": False},
    {"shots": [SHOT], "candidates": "2"},
    {"shots": [SHOT], "seed": True},
    {"shots": [SHOT], "color_correct": 1},
    {"shots": [{**SHOT, "characters": ["mira", "bolt"]}]},
    {"shots": [{**SHOT, "characters": ["mira", "mira"]}]},
    {"shots": [{**SHOT, "characters": ["Mira"]}]},
]


@pytest.mark.parametrize("body", RUN_BODIES, ids=range(len(RUN_BODIES)))
@pytest.mark.parametrize("path", ["/api/projects/{slug}/runs", "/api/projects/{slug}/runs/plan"])
def test_a_run_body_the_document_allows_is_one_the_server_accepts(doc, path, body):
    assert _allows(doc, _body(doc, "post", path), body) == _accepts(RunParams, {"slug": "alpha", **body})


def test_a_run_needs_a_body_and_lists_what_it_can_name(doc):
    op = doc["paths"]["/api/projects/{slug}/runs"]["post"]
    assert op["requestBody"]["required"] is True  # {} names no shot list
    body = doc["components"]["schemas"]["RunParamsBody"]["properties"]
    # Generating providers only: removebg and photoroom are the paid APIs of background-removal engines, llm the
    # copilot's chat model, agent_api the external agent, openai_audio the copilot's paid voice.
    assert body["provider"]["enum"] == sorted(set(default_providers()) - {"removebg", "photoroom", "llm", "agent_api",
                                                                           "openai_audio"})
    engines = next(s for s in body["background_engines"]["anyOf"] if s.get("type") == "array")
    assert {"key", "removebg", "photoroom"} <= set(engines["items"]["enum"])
    assert "lanczos" not in engines["items"]["enum"]  # lanczos upscales: not a background-removal engine
    stages = next(s for s in body["stages"]["anyOf"] if s.get("type") == "array")
    assert ["style_lock", "light_time", "weather_effects"] in stages["enum"]
    assert ["light_time"] not in stages["enum"] and ["style_lock", "advanced", "light_time"] not in stages["enum"]


@pytest.mark.parametrize("query,ok", [({"run_id": RUN_ID}, True), ({"job_id": JOB_ID}, True),
                                      ({}, False), ({"run_id": RUN_ID, "job_id": JOB_ID}, False),
                                      ({"run_id": "nope"}, False), ({"run": RUN_ID}, False)])
def test_candidates_take_exactly_one_of_run_id_and_job_id_in_the_document_too(doc, query, ok):
    params = doc["paths"]["/api/projects/{slug}/candidates"]["get"]["parameters"]
    (obj,) = [p for p in params if p["in"] == "query"]
    assert (obj["style"], obj["explode"], obj["required"]) == ("form", True, True)  # name=value pairs
    assert _allows(doc, obj["schema"], query) is ok
    assert _accepts(CandidatesParams, {"slug": "alpha", **query}) is ok


QA_BLOCKS = [
    ({"exposure": {"day": [0.9, 0.1]}}, True),   # either order, kept low first
    ({"exposure": {"day": [0.5, 0.5]}}, True),
    ({"exposure": {"day": [0.1]}}, False),
    ({"exposure": {"day": [0.1, 1.2]}}, False),
    ({"exposure": {"noon": [0.1, 0.2]}}, False),
    ({"duplicate_max_distance": False}, False),
    ({"duplicate_max_distance": "6"}, False),
    ({"duplicate_max_distance": 6.0}, True),
    ({"min_contrast": 1}, True),
    ({"min_contrast": True}, False),
]


@pytest.mark.parametrize("qa,ok", QA_BLOCKS, ids=range(len(QA_BLOCKS)))
def test_style_guide_qa_thresholds_agree(doc, qa, ok):
    body = {"name": "g", "rules_json": {"qa": qa}}
    assert _allows(doc, _body(doc, "post", "/api/projects/{slug}/style-guides"), body) is ok
    assert _accepts(StyleGuideCreate, {"slug": "alpha", **body}) is ok


def test_engine_codes_in_the_document_are_those_of_the_app_given(doc, home):
    path = "/api/projects/{slug}/assets/{asset_id}/remove-background"
    engines = doc["components"]["schemas"]["RemoveBackgroundParamsBody"]["properties"]["engines"]
    listed = next(s for s in engines["anyOf"] if s.get("type") == "array")["items"]["enum"]
    assert {"key", "removebg", "photoroom"} <= set(listed) and "lanczos" not in listed
    assert _allows(doc, _body(doc, "post", path), {"engines": ["key"]})
    assert not _allows(doc, _body(doc, "post", path), {"engines": ["nope"]})
    assert not _allows(doc, _body(doc, "post", path), {"engines": ["lanczos"]})

    from iat.settings import Settings
    from iat.engines.key import KeyEngine

    app = App(Settings.from_env({}, home=home))
    try:
        app.engines.register("another_key", KeyEngine())
        mine = openapi_document(app.registry, parts=app)
        engines = mine["components"]["schemas"]["RemoveBackgroundParamsBody"]["properties"]["engines"]
        assert next(s for s in engines["anyOf"] if s.get("type") == "array")["items"]["enum"] == sorted(
            ["another_key", *listed])
    finally:
        app.close()


FLAGS = [("/api/projects/{slug}/assets/import", "ImportParams", {"paths": ["/x"], "recursive": 1}),
         ("/api/projects/{slug}/assets/{asset_id}/quality-check", "CheckParams", {"require_transparency": "yes"}),
         ("/api/projects/{slug}/storage", "SetParams", {"s3_enabled": 0})]


@pytest.mark.parametrize("path,model,body", FLAGS, ids=[m for _, m, _ in FLAGS])
def test_flags_are_json_booleans_in_the_document_and_the_server(doc, path, model, body):
    from iat.commands import assets, quality, storage

    cls = {"ImportParams": assets.ImportParams, "CheckParams": quality.CheckParams,
           "SetParams": storage.SetParams}[model]
    method = "put" if model == "SetParams" else "post"
    given = {"slug": "alpha", "asset_id": str(uuid.uuid4()), **body}
    given = {k: v for k, v in given.items() if k in cls.model_fields}
    flag = next(k for k in body if k != "paths")
    assert not _allows(doc, _body(doc, method, path), body) and not _accepts(cls, given)
    assert _allows(doc, _body(doc, method, path), {**body, flag: True}) and _accepts(cls, {**given, flag: True})
