"""JSON-RPC 2.0 conformance of the real sidecar, on every transport, from the specification's own examples
(https://www.jsonrpc.org/specification, section 7) adapted to this sidecar's methods; plus id echoing, the one
error shape and the application errors."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def existing(sidecar) -> dict:
    """A project that exists in this module's sidecar."""
    slug = f"existing-{sidecar.transport}"
    return sidecar.call("projects.create", {"slug": slug, "name": "Existing"})


def test_ready_notification(sidecar):
    msg = sidecar.process.ready_message
    assert set(msg) == {"jsonrpc", "method", "params"} and msg["jsonrpc"] == "2.0"
    ready = msg["params"]
    assert {"version", "schema_version", "pid", "home", "tcp", "http", "token"} <= set(ready)
    assert isinstance(ready["version"], str) and ready["version"]
    assert isinstance(ready["schema_version"], dict) and ready["schema_version"]
    assert ready["pid"] == sidecar.process.proc.pid
    assert ready["home"] == str(sidecar.process.home.resolve())
    assert isinstance(ready["token"], str) and len(ready["token"]) >= 32
    if sidecar.transport == "tcp":
        assert ready["tcp"] == {"host": "127.0.0.1", "port": ready["tcp"]["port"]} and ready["tcp"]["port"] > 0
    else:
        assert ready["tcp"] is None
    if sidecar.transport == "http":
        port = ready["http"]["port"]
        assert ready["http"] == {"host": "127.0.0.1", "port": port, "url": f"http://127.0.0.1:{port}"}
    else:
        assert ready["http"] is None


# --- section 7: the specification's examples ---


def test_call_with_positional_params(sidecar, proto, existing):
    result = proto.result(sidecar.request({"jsonrpc": "2.0", "method": "system.ping", "params": [], "id": 1}), 1)
    assert result["pong"] is True
    # by-position params map onto the params model's fields in declaration order
    reply = sidecar.request({"jsonrpc": "2.0", "method": "projects.get", "params": [existing["slug"]], "id": 2})
    assert proto.result(reply, 2)["id"] == existing["id"]


def test_call_with_named_params(sidecar, proto, existing):
    reply = sidecar.request({"jsonrpc": "2.0", "method": "projects.get", "params": {"slug": existing["slug"]},
                             "id": 3})
    assert proto.result(reply, 3)["id"] == existing["id"]
    reply = sidecar.request({"jsonrpc": "2.0", "method": "system.ping", "params": {}, "id": 4})
    assert proto.result(reply, 4)["pong"] is True


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "method": "system.ping"},
    {"jsonrpc": "2.0", "method": "system.ping", "params": []},
    {"jsonrpc": "2.0", "method": "update", "params": [1, 2, 3, 4, 5]},  # the spec's: an unknown method
    {"jsonrpc": "2.0", "method": "foobar"},
    {"jsonrpc": "2.0", "method": "projects.get", "params": {"slug": "no-such-project"}},  # fails silently
], ids=["ping", "ping-positional", "unknown-update", "unknown-foobar", "failing"])
def test_notification_gets_no_reply(sidecar, message):
    # stdio/tcp: a ping sent behind it gets the only answer; http: 204 with an empty body (checked by the client)
    assert sidecar.request(message) is None


def test_non_existent_method(sidecar, proto):
    reply = sidecar.request({"jsonrpc": "2.0", "method": "foobar", "id": "1"})
    proto.error_response(reply, -32601, "method_not_found", request_id="1")


def test_invalid_json(sidecar, proto):
    reply = sidecar.request(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    proto.error_response(reply, -32700, "parse_error", request_id=None)


def test_invalid_request_object(sidecar, proto):
    reply = sidecar.request({"jsonrpc": "2.0", "method": 1, "params": "bar"})
    proto.error_response(reply, -32600, "invalid_request", request_id=None)


def test_batch_with_invalid_json(sidecar, proto):
    # the spec's example on one line: stdio and tcp frame messages by newlines
    reply = sidecar.request(b'[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, '
                            b'{"jsonrpc": "2.0", "method"]')
    assert isinstance(reply, dict), reply  # one error, not an array
    proto.error_response(reply, -32700, "parse_error", request_id=None)


def test_empty_batch(sidecar, proto):
    reply = sidecar.request([])
    assert isinstance(reply, dict), reply  # one error, not an array
    proto.error_response(reply, -32600, "invalid_request", request_id=None)


def test_invalid_batch_of_one(sidecar, proto):
    reply = sidecar.request([1])
    assert isinstance(reply, list) and len(reply) == 1, reply
    proto.error_response(reply[0], -32600, "invalid_request", request_id=None)


def test_invalid_batch_of_three(sidecar, proto):
    reply = sidecar.request([1, 2, 3])
    assert isinstance(reply, list) and len(reply) == 3, reply
    for item in reply:
        proto.error_response(item, -32600, "invalid_request", request_id=None)


def test_mixed_batch(sidecar, proto, existing):
    batch = [
        {"jsonrpc": "2.0", "method": "system.ping", "params": [], "id": "1"},
        {"jsonrpc": "2.0", "method": "system.ping", "params": {}},  # notification
        {"jsonrpc": "2.0", "method": "projects.get", "params": {"slug": existing["slug"]}, "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "projects.get", "params": {"slug": "no-such-project"}, "id": "9"},
    ]
    reply = sidecar.request(batch)
    assert isinstance(reply, list) and len(reply) == 5, reply
    by_id: dict = {}
    for item in reply:
        assert item["id"] not in by_id, reply
        by_id[item["id"]] = item
    assert set(by_id) == {"1", "2", None, "5", "9"}, reply
    assert proto.result(by_id["1"], "1")["pong"] is True
    assert proto.result(by_id["2"], "2")["id"] == existing["id"]
    proto.error_response(by_id[None], -32600, "invalid_request", request_id=None)
    proto.error_response(by_id["5"], -32601, "method_not_found", request_id="5")
    proto.error_response(by_id["9"], -32004, "not_found", request_id="9")


def test_batch_of_notifications(sidecar):
    assert sidecar.request([
        {"jsonrpc": "2.0", "method": "system.ping", "params": [1, 2, 4]},  # even a failing one stays silent
        {"jsonrpc": "2.0", "method": "system.ping"},
    ]) is None


# --- ids ---


@pytest.mark.parametrize("request_id", ["abc", "", "ид-✓ \"quoted\"", 0, 7, -3, 9007199254740993, 1.5, None],
                         ids=["str", "empty-str", "unicode-str", "zero", "int", "negative", "big-int", "float",
                              "null"])
def test_id_echoed_exactly(sidecar, proto, request_id):
    reply = sidecar.request({"jsonrpc": "2.0", "method": "system.ping", "id": request_id})
    assert proto.result(reply, request_id)["pong"] is True
    reply = sidecar.request({"jsonrpc": "2.0", "method": "no.such.method", "id": request_id})
    proto.error_response(reply, -32601, "method_not_found", request_id=request_id)


@pytest.mark.parametrize("bad_id", [True, False, {"a": 1}, [1]], ids=["true", "false", "object", "array"])
def test_invalid_id(sidecar, proto, bad_id):
    reply = sidecar.request({"jsonrpc": "2.0", "method": "system.ping", "id": bad_id})
    proto.error_response(reply, -32600, "invalid_request", request_id=None)


# --- envelope problems ---


@pytest.mark.parametrize("message", [
    {"jsonrpc": "1.0", "method": "system.ping", "id": 1},
    {"method": "system.ping", "id": 1},
    {"jsonrpc": 2.0, "method": "system.ping", "id": 1},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "method": None, "id": 1},
    {"jsonrpc": "2.0", "method": "system.ping", "params": "bar", "id": 1},
    {"jsonrpc": "2.0", "method": "system.ping", "params": 5, "id": 1},
    {"jsonrpc": "2.0", "method": "system.ping", "id": 1, "extra": True},
], ids=["version-1.0", "no-version", "version-number", "no-method", "null-method", "params-string",
        "params-number", "unknown-member"])
def test_invalid_envelope(sidecar, proto, message):
    reply = sidecar.request(message)
    proto.error_response(reply, -32600, "invalid_request", request_id=1)


@pytest.mark.parametrize("raw", [b'"just a string"', b"42", b"null", b"true"], ids=["string", "number", "null",
                                                                                 "bool"])
def test_non_object_message(sidecar, proto, raw):
    proto.error_response(sidecar.request(raw), -32600, "invalid_request", request_id=None)


# --- application errors ---


def test_get_unknown_project(sidecar, proto):
    error = sidecar.error("projects.get", {"slug": "no-such-project"})
    proto.error_object(error, -32004, "not_found")
    assert error["data"]["details"] == {"slug": "no-such-project"}


def test_create_twice_is_conflict(sidecar, proto):
    slug = proto.unique_slug("twice")
    sidecar.call("projects.create", {"slug": slug, "name": "First"})
    error = sidecar.error("projects.create", {"slug": slug, "name": "Second"})
    proto.error_object(error, -32009, "conflict")
    assert sidecar.call("projects.get", {"slug": slug})["name"] == "First"


def test_delete_without_confirm(sidecar, proto, existing):
    error = sidecar.error("projects.delete", {"slug": existing["slug"]})
    proto.error_object(error, -32010, "confirmation_required")
    assert sidecar.call("projects.get", {"slug": existing["slug"]})["status"] == "active"
    error = sidecar.error("projects.delete", {"slug": "no-such-project"})
    proto.error_object(error, -32004, "not_found")


@pytest.mark.parametrize("method,params", [
    ("projects.create", {"slug": 5, "name": ["x"]}),
    ("projects.create", {"slug": "Not A Slug", "name": "x"}),
    ("projects.create", {"slug": "ok-slug"}),
    ("projects.create", {"slug": "ok-slug", "name": "x", "unknown_field": 1}),
    ("projects.get", {"slug": None}),
    ("projects.get", [123]),
    ("projects.list", {"status": "bogus"}),
    ("audit.list", {"limit": "many"}),
    ("projects.delete", {"slug": "ok-slug", "confirm": "perhaps"}),
], ids=["create-types", "create-bad-slug", "create-missing-name", "create-unknown-field", "get-null-slug",
        "get-positional-int", "list-bad-status", "audit-bad-limit", "delete-bad-confirm"])
def test_wrong_param_types(sidecar, proto, method, params):
    error = sidecar.error(method, params)
    proto.error_object(error, -32602, "invalid_params")
    errors = error["data"]["details"]["errors"]
    assert isinstance(errors, list) and errors, error
    for e in errors:
        assert {"loc", "msg", "type"} <= set(e), e
    assert sidecar.error("projects.get", {"slug": "ok-slug"})["data"]["name"] == "not_found"


def test_too_many_positional_params(sidecar, proto):
    error = sidecar.error("system.ping", [1, 2])
    proto.error_object(error, -32602, "invalid_params")
    assert isinstance(error["data"]["details"]["errors"], list)
