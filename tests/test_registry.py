"""Guard tests over the command registry and the error model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iat.errors import all_error_classes, error_object
from iat.registry import Command, Params, Result, Route, command, load_commands
from iat.rpc.openapi import openapi_document

REQUIRED = {"system.ping", "system.info", "system.shutdown", "users.list", "users.get", "projects.create",
            "projects.list", "projects.get", "projects.update", "projects.archive", "projects.delete",
            "storage.get", "storage.set", "audit.list"}


def test_every_command_is_documented_and_has_schemas():
    registry = load_commands()
    assert REQUIRED <= {c.name for c in registry}
    for cmd in registry:
        assert cmd.summary, f"{cmd.name} has no docstring"
        assert issubclass(cmd.params, Params) and issubclass(cmd.result, Result), cmd.name
        assert cmd.params.model_json_schema()["type"] == "object", cmd.name
        assert cmd.result.model_json_schema()["type"] == "object", cmd.name
        if cmd.route:
            assert set(cmd.route.path_params) <= set(cmd.params.model_fields), cmd.name


def test_mutating_commands_are_the_ones_that_change_state():
    mutating = {c.name for c in load_commands() if c.mutating}
    assert mutating == {"projects.create", "projects.attach", "projects.move", "projects.update", "projects.archive", "projects.unarchive",
                        "projects.delete", "storage.set", "storage.sync", "assets.import", "assets.link",
                        "style_guides.create", "style_guides.update", "style_guides.set_default",
                        "reference_sets.create", "reference_sets.add_item", "reference_sets.remove_item",
                        "characters.create", "characters.update", "prompt_templates.create",
                        "runs.plan", "runs.start", "runs.replay", "runs.cancel", "candidates.select",
                        "images.remove_background", "images.upscale", "images.color_correct", "quality.check",
                        "secrets.set", "secrets.delete", "secrets.rotate_key", "providers.configure",
                            "providers.enable", "providers.disable", "providers.check",
                        "models.install", "models.download", "models.remove",
                        "exports.create", "exports.import", "assets.delete",
                        "chat.sessions.create", "chat.messages.send",
                        "agent.instructions.create", "agent.instructions.confirm", "agent.instructions.cancel",
                        "agent.instructions.callback", "voice.stt", "voice.tts"}


def test_a_duplicate_command_name_fails_at_import():
    class P(Params):
        pass

    with pytest.raises(RuntimeError, match="declared twice"):
        command("system.ping", params=P, result=Result)(lambda ctx, p: None)
    with pytest.raises(RuntimeError, match="route"):
        load_commands().add(Command("x.y", lambda c, p: None, P, Result, "Doc.", Route("GET", "/api/system/ping"), False))


def test_error_classes_have_unique_names_codes_and_one_shape():
    classes = all_error_classes()
    assert len({c.name for c in classes}) == len(classes)
    assert len({c.code for c in classes}) == len(classes)
    for cls in classes:
        obj = cls("something went wrong").to_object()
        assert set(obj) == {"code", "message", "data"} and set(obj["data"]) == {"name", "details"}
        assert isinstance(obj["code"], int) and 100 <= cls.http_status < 600
        json.dumps(obj)
    unknown = error_object(KeyError("secret-value"))
    assert unknown["data"]["name"] == "internal_error" and "secret-value" not in json.dumps(unknown)


def test_openapi_document_covers_every_route_and_method():
    doc = openapi_document(load_commands())
    assert doc["openapi"] == "3.1.0"
    for cmd in load_commands():
        assert cmd.name in doc["x-jsonrpc-methods"]
        if cmd.route:
            op = doc["paths"][cmd.route.path][cmd.route.method.lower()]
            assert op["operationId"] == cmd.name
    assert "/rpc" in doc["paths"]
    committed = json.loads((Path(__file__).resolve().parents[1] / "schema" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(doc))
