"""OpenAPI 3.1 for the REST routes and the JSON-RPC methods, generated from the registry (and written to
schema/openapi.json by `iat-sidecar schema`).

Everything is derived from the command declarations, so a new command gets a true operation without work here:
- parameters: path parameters from the route; for GET and DELETE the other fields are query parameters (one
  form-exploded object parameter when the params model ties fields together, e.g. "exactly one of", which
  separate parameters cannot say); for POST, PUT and PATCH they are the JSON body, whose schema leaves the path
  parameters out (the server refuses a body or a query naming one); a body or query object that `{}` cannot
  satisfy is required;
- codes of pluggable parts (a field marked `json_schema_extra={PARTS_KEY: "engine:remove_background"}` or
  `"provider"`) are listed as an enum: those of the App given, else the built-in ones every App registers;
- responses: 200 with the result schema, and every error status the operation can answer, each with the one error
  body: the statuses every request can get (401, 403, 422, 500, 503), those of a JSON body (400, 413), 404 for a
  path that names something, and those of the errors the command declares (`command(errors=...)`) or its params
  model looks up (`lookup_errors`, e.g. ProjectRef).
"""

from __future__ import annotations

import copy
import importlib
from http import HTTPStatus
from typing import TYPE_CHECKING, Iterable
from urllib.parse import unquote

from pydantic.json_schema import models_json_schema

from iat import __version__
from iat.errors import (Forbidden, IATError, InternalError, InvalidParams, InvalidRequest, MethodNotAllowed, NotFound,
                        ParseError, PayloadTooLarge, ShuttingDown, Unauthorized, all_error_classes)

if TYPE_CHECKING:
    from iat.registry import Command, Registry

_REF = "#/components/schemas/{model}"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Keywords that tie an object's fields together: query parameters listed one by one cannot carry them.
_CROSS_FIELD = ("oneOf", "anyOf", "allOf", "not", "if", "dependentRequired", "dependentSchemas")
# Marks a string field naming a pluggable part ("provider", "engine" or "engine:<op>"): filled in as an enum.
PARTS_KEY = "x-iat-parts"

# Every request passes the guard (Host, Origin, token), the params check and, while stopping, the refusal.
_EVERY_REQUEST = (Unauthorized, Forbidden, InvalidParams, InternalError, ShuttingDown)
# A JSON body can be unreadable, not JSON, or over the message limit.
_JSON_BODY = (ParseError, InvalidRequest, PayloadTooLarge)

# Why each error comes, where it helps a reader more than its name.
_WHEN = {
    "unauthorized": "no or a wrong `Authorization: Bearer` token",
    "forbidden": "a Host header that is not a loopback address, or an Origin not on the allow-list",
    "invalid_params": "params that break the schema: a wrong type or format, an unknown field, a path parameter "
                      "repeated in the body or query",
    "parse_error": "a body that is not JSON",
    "invalid_request": "a request the HTTP layer cannot read",
    "payload_too_large": "a body over the message limit",
    "internal_error": "a fault of the sidecar; see its log",
    "shutting_down": "the sidecar is stopping",
    "not_found": "nothing by that name or id",
    "confirmation_required": "a destructive call without confirm=true; repeat it with confirm=true",
}


def _error_schemas() -> dict:
    names = sorted({cls.name for cls in all_error_classes()})
    return {
        "ErrorObject": {
            "type": "object",
            "required": ["code", "message", "data"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "data": {"type": "object", "required": ["name", "details"], "additionalProperties": False,
                         "properties": {"name": {"type": "string", "enum": names},
                                        "details": {"type": "object"}}},
            },
        },
        "ErrorBody": {"type": "object", "required": ["error"], "additionalProperties": False,
                      "properties": {"error": {"$ref": _REF.format(model="ErrorObject")}}},
        "JsonRpcResponse": {
            "type": "object",
            "required": ["jsonrpc", "id"],
            "additionalProperties": False,
            "properties": {"jsonrpc": {"const": "2.0"}, "result": {},
                           "error": {"$ref": _REF.format(model="ErrorObject")},
                           "id": {"type": ["string", "number", "null"]}},
            "oneOf": [{"required": ["result"]}, {"required": ["error"]}],
        },
    }


def _error_response(status: int, classes: Iterable[type[IATError]]) -> dict:
    names = sorted({cls.name for cls in classes})
    reasons = "; ".join(f"{n} ({_WHEN[n]})" if n in _WHEN else n for n in names)
    response: dict = {"description": f"{HTTPStatus(status).phrase}: {reasons}",
                      "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}}}
    if status == Unauthorized.http_status:
        response["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    return response


def _error_responses(classes: Iterable[type[IATError]]) -> dict[str, dict]:
    by_status: dict[int, list[type[IATError]]] = {}
    for cls in classes:
        by_status.setdefault(cls.http_status, []).append(cls)
    return {str(status): _error_response(status, found) for status, found in sorted(by_status.items())}


def operation_errors(cmd: Command) -> list[type[IATError]]:
    """Every error class a REST call of `cmd` can answer with."""
    assert cmd.route is not None
    classes = list(_EVERY_REQUEST)
    if cmd.route.method in BODY_METHODS:
        classes += _JSON_BODY
    if cmd.route.path_params:
        classes.append(NotFound)  # a path parameter names something that may not exist
    classes += getattr(cmd.params, "lookup_errors", ())
    classes += cmd.errors
    return list(dict.fromkeys(classes))


def path_template(templates: Iterable[str], raw_path: str) -> str | None:
    """The template a request path falls under as OpenAPI reads paths: a literal segment wins over a parameter in
    the same place (/assets/import is not /assets/{asset_id}), earlier segments first."""
    segments = [unquote(s) for s in raw_path.split("/")]
    best, best_key = None, None
    for template in templates:
        parts = template.split("/")
        if len(parts) != len(segments):
            continue
        key = []
        for part, segment in zip(parts, segments):
            if part.startswith("{") and part.endswith("}") and segment:
                key.append(1)
            elif part == segment:
                key.append(0)
            else:
                break
        else:
            if best_key is None or key < best_key:
                best, best_key = template, key
    return best


def _without_null(schema: dict) -> dict:
    """A query or path parameter is absent rather than null: drop the null branch of an optional field."""
    options = schema.get("anyOf")
    if not options or {"type": "null"} not in options:
        return schema
    rest = [o for o in options if o != {"type": "null"}]
    out = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(rest) == 1:
        return {**rest[0], **out}
    return {**out, "anyOf": rest}


def _accepts_empty(schema: dict) -> bool:
    """Whether `{}` can satisfy an object schema (as far as required, oneOf, anyOf and allOf decide)."""
    if schema.get("required"):
        return False
    if "oneOf" in schema and sum(_accepts_empty(s) for s in schema["oneOf"]) != 1:
        return False
    if "anyOf" in schema and not any(_accepts_empty(s) for s in schema["anyOf"]):
        return False
    return all(_accepts_empty(s) for s in schema.get("allOf", ()))


def _query_object(params_schema: dict, path_params: tuple[str, ...]) -> dict:
    """The query fields of a params model whose fields are tied together, as one form-exploded object parameter
    (serialised as ordinary `name=value` pairs; the parameter's own name never appears in the URL)."""
    properties = {n: _without_null(s) for n, s in params_schema.get("properties", {}).items() if n not in path_params}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [r for r in params_schema.get("required", []) if r not in path_params]
    if required:
        schema["required"] = required
    schema.update({k: copy.deepcopy(v) for k, v in params_schema.items() if k in _CROSS_FIELD})
    return {"name": "query", "in": "query", "required": not _accepts_empty(schema), "style": "form",
            "explode": True, "schema": schema,
            "description": "The query parameters " + ", ".join(properties) + " (form style: name=value pairs)"}


def _built_in_parts(kind: str) -> dict[str, str]:
    from iat.engines import default_engines
    from iat.providers import default_providers

    return default_engines() if kind == "engine" else default_providers()


def _part_codes(spec: str, parts) -> list[str]:
    """The codes a PARTS_KEY field takes: "provider", "engine", "engine:<op>" or "provider:<op>" (the parts
    doing that op)."""
    kind, _, op = spec.partition(":")
    if parts is not None:
        registry = parts.engines if kind == "engine" else parts.providers
        return [code for code in registry.codes() if not op or _does(registry.get(code), op)]
    codes = []
    for code, path in sorted(_built_in_parts(kind).items()):
        module, _, attr = path.partition(":")
        if not op or _does(getattr(importlib.import_module(module), attr), op):
            codes.append(code)
    return codes


def _does(part, op: str) -> bool:
    """An engine does its one `op`; a provider its `operations` (generate, remove_background)."""
    operations = getattr(part, "operations", None)
    return op in operations if operations is not None else getattr(part, "op", None) == op


def _fill_parts(node, parts, found: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        spec = node.pop(PARTS_KEY, None)
        if spec is not None:
            if spec not in found:
                found[spec] = _part_codes(spec, parts)
            node["enum"] = found[spec]
        for value in node.values():
            _fill_parts(value, parts, found)
    elif isinstance(node, list):
        for value in node:
            _fill_parts(value, parts, found)


def _body_schema(schemas: dict, name: str, path_params: tuple[str, ...]) -> str:
    """The params schema without the path parameters, as its own component; returns the component's name."""
    body_name = f"{name}Body"
    body = copy.deepcopy(schemas[name])
    for param in path_params:
        body.get("properties", {}).pop(param, None)
    required = [r for r in body.get("required", []) if r not in path_params]
    if required:
        body["required"] = required
    else:
        body.pop("required", None)
    body["title"] = body_name
    existing = schemas.get(body_name)
    if existing is not None and existing != body:  # the same model under other path parameters
        body_name = f"{name}Without{''.join(p.title().replace('_', '') for p in path_params)}"
        body["title"] = body_name
    schemas[body_name] = body
    return body_name


def _rest_operation(cmd: Command, schemas: dict, params_ref: dict, result_ref: dict) -> dict:
    route = cmd.route
    assert route is not None
    params_name = params_ref["$ref"].rsplit("/", 1)[1]
    params_schema = schemas[params_name]
    properties = params_schema.get("properties", {})
    required = set(params_schema.get("required", []))
    op: dict = {
        "operationId": cmd.name,
        "summary": cmd.summary,
        "description": cmd.doc,
        "tags": [cmd.name.split(".")[0]],
        "parameters": [{"name": n, "in": "path", "required": True, "schema": _without_null(properties.get(n, {}))}
                       for n in route.path_params],
        "responses": {"200": {"description": "Result", "content": {"application/json": {"schema": result_ref}}},
                      **_error_responses(operation_errors(cmd))},
    }
    if route.method in BODY_METHODS:
        body_name = _body_schema(schemas, params_name, route.path_params) if route.path_params else params_name
        body_required = not _accepts_empty(schemas[body_name])
        op["requestBody"] = {"required": body_required,
                             "content": {"application/json": {"schema": {"$ref": _REF.format(model=body_name)}}}}
        if not body_required:
            op["requestBody"]["description"] = "May be left out (no body, or an empty one, is {})."
    elif any(k in params_schema for k in _CROSS_FIELD):
        op["parameters"].append(_query_object(params_schema, route.path_params))
    else:
        op["parameters"] += [{"name": n, "in": "query", "required": n in required, "schema": _without_null(s)}
                             for n, s in properties.items() if n not in route.path_params]
    return op


def _rpc_operation() -> dict:
    return {"post": {
        "operationId": "rpc",
        "summary": "JSON-RPC 2.0: one request, a notification or a batch; methods in x-jsonrpc-methods",
        "description": "Whatever the body is (none, not JSON, not a valid request), the answer is 200 with a "
                       "JSON-RPC response (an error response for a bad message, with id null where the id cannot "
                       "be read), or 204 when only notifications were sent.",
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "description": "A JSON-RPC 2.0 request or notification, or a batch (array) of them"}}}},
        "responses": {
            "200": {"description": "The response, or the array of responses of a batch",
                    "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": _REF.format(model="JsonRpcResponse")},
                        {"type": "array", "minItems": 1, "items": {"$ref": _REF.format(model="JsonRpcResponse")}},
                    ]}}}},
            "204": {"description": "Only notifications were sent"},
            **_error_responses((Unauthorized, Forbidden, PayloadTooLarge, InternalError, ShuttingDown)),
        },
    }}


def openapi_document(registry: Registry, parts=None) -> dict:
    """The document of `registry`'s commands; `parts` (an App: its `engines` and `providers`) gives the part codes
    to list, default the built-in ones."""
    commands = list(registry)
    keys = []
    for cmd in commands:
        keys += [(cmd.params, "validation"), (cmd.result, "serialization")]
    refs, top = models_json_schema(keys, ref_template=_REF)
    schemas = {**top.get("$defs", {}), **_error_schemas()}
    _fill_parts(schemas, parts, {})

    paths: dict = {}
    methods = {}
    for cmd in commands:
        params_ref = refs[(cmd.params, "validation")]
        result_ref = refs[(cmd.result, "serialization")]
        methods[cmd.name] = {"summary": cmd.summary, "description": cmd.doc, "params": params_ref,
                             "result": result_ref, "mutating": cmd.mutating}
        if cmd.route is not None:
            paths.setdefault(cmd.route.path, {})[cmd.route.method.lower()] = _rest_operation(
                cmd, schemas, params_ref, result_ref)
    paths["/rpc"] = _rpc_operation()

    not_allowed = _error_response(MethodNotAllowed.http_status, [MethodNotAllowed])
    not_allowed["headers"] = {"Allow": {"required": True, "description": "The methods the path takes (RFC 9110)",
                                        "schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "IAT Toolkit sidecar", "version": __version__,
                 "description": "Localhost API of the IAT Toolkit sidecar. Every request needs "
                                "`Authorization: Bearer <token>` (the token is in sidecar.ready). Errors answer "
                                "`ErrorBody` with the status of their name. A method a path does not take answers "
                                "405 with an `Allow` header (components.responses.MethodNotAllowed); a path "
                                "that matches no route answers 404."},
        "servers": [{"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "0"}}}],
        "components": {"schemas": dict(sorted(schemas.items())),
                       "responses": {"MethodNotAllowed": not_allowed},
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": dict(sorted(paths.items())),
        "x-jsonrpc-methods": methods,
    }
