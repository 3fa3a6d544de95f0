"""OpenAPI 3.1 for the REST routes and the JSON-RPC methods, generated from the registry (and written to
schema/openapi.json by `iat-sidecar schema --write`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic.json_schema import models_json_schema

from iat import __version__
from iat.errors import all_error_classes

if TYPE_CHECKING:
    from iat.registry import Registry

_REF = "#/components/schemas/{model}"


def _error_schemas() -> dict:
    names = sorted({cls.name for cls in all_error_classes()})
    return {
        "ErrorObject": {
            "type": "object",
            "required": ["code", "message", "data"],
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "data": {"type": "object", "required": ["name", "details"],
                         "properties": {"name": {"type": "string", "enum": names},
                                        "details": {"type": "object"}}},
            },
        },
        "ErrorBody": {"type": "object", "required": ["error"],
                      "properties": {"error": {"$ref": _REF.format(model="ErrorObject")}}},
    }


def openapi_document(registry: Registry) -> dict:
    commands = list(registry)
    keys = []
    for cmd in commands:
        keys += [(cmd.params, "validation"), (cmd.result, "serialization")]
    refs, top = models_json_schema(keys, ref_template=_REF)
    schemas = {**top.get("$defs", {}), **_error_schemas()}
    error_response = {"description": "Error", "content": {"application/json": {
        "schema": {"$ref": _REF.format(model="ErrorBody")}}}}

    paths: dict = {}
    methods = {}
    for cmd in commands:
        params_ref = refs[(cmd.params, "validation")]
        result_ref = refs[(cmd.result, "serialization")]
        methods[cmd.name] = {"summary": cmd.summary, "description": cmd.doc, "params": params_ref,
                             "result": result_ref, "mutating": cmd.mutating}
        if cmd.route is None:
            continue
        params_schema = schemas[params_ref["$ref"].rsplit("/", 1)[1]]
        properties = params_schema.get("properties", {})
        required = set(params_schema.get("required", []))
        op: dict = {
            "operationId": cmd.name,
            "summary": cmd.summary,
            "description": cmd.doc,
            "tags": [cmd.name.split(".")[0]],
            "parameters": [{"name": n, "in": "path", "required": True, "schema": properties.get(n, {})}
                           for n in cmd.route.path_params],
            "responses": {"200": {"description": "Result", "content": {"application/json": {"schema": result_ref}}},
                          "default": error_response},
        }
        if cmd.route.method in ("POST", "PUT", "PATCH"):
            op["requestBody"] = {"required": bool(required - set(cmd.route.path_params)),
                                 "content": {"application/json": {"schema": params_ref}}}
        else:
            op["parameters"] += [{"name": n, "in": "query", "required": n in required, "schema": s}
                                 for n, s in properties.items() if n not in cmd.route.path_params]
        paths.setdefault(cmd.route.path, {})[cmd.route.method.lower()] = op

    paths["/rpc"] = {"post": {
        "operationId": "rpc",
        "summary": "JSON-RPC 2.0: one request, a notification or a batch; methods in x-jsonrpc-methods",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}},
        "responses": {"200": {"description": "Response or batch of responses"},
                      "204": {"description": "Only notifications were sent"},
                      "default": error_response},
    }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "IAT Toolkit sidecar", "version": __version__,
                 "description": "Localhost API of the IAT Toolkit sidecar. Every request needs "
                                "`Authorization: Bearer <token>` (the token is in sidecar.ready)."},
        "servers": [{"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "0"}}}],
        "components": {"schemas": schemas,
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": dict(sorted(paths.items())),
        "x-jsonrpc-methods": methods,
    }
