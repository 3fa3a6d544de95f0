"""Security of the network transports on the real process: the bearer token, Host and Origin checks and the REST
routes over HTTP; authentication first on the socket; loopback-only binding; the token kept out of the logs.

One process serves TCP and HTTP for the whole module, logging at DEBUG so the token check at the end is strict.
"""

from __future__ import annotations

import socket
import sys

import pytest

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def secured(tmp_path_factory, proto):
    process = proto.SidecarProcess(("tcp", "http"), tmp_path_factory.mktemp("secure") / "home",
                                   env={"IAT_LOG_LEVEL": "DEBUG"})
    try:
        process.connect("http")  # polls until HTTP answers
        yield process
        assert process.stop() == 0
        assert not process.ready_file.exists()
        assert not process.stdout.garbage
        # what it logged while stopping is clean too
        token = process.ready["token"]
        assert token not in process.stderr_text() and token not in process.log_text()
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def web(secured):
    return secured.connect("http")


@pytest.fixture
def tcp(secured, proto):
    clients = []

    def connect(authenticate: bool = True):
        client = proto.TcpClient(secured, authenticate=authenticate)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def test_ready_params_name_loopback_only(secured):
    ready = secured.ready
    assert ready["tcp"]["host"] == "127.0.0.1"
    assert ready["http"]["host"] == "127.0.0.1"
    assert ready["http"]["url"] == f"http://127.0.0.1:{ready['http']['port']}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2 is loopback without setup on Linux")
@pytest.mark.parametrize("which", ["tcp", "http"])
def test_bound_to_127_0_0_1_only(secured, which):
    """Another loopback address reaches a socket bound to 0.0.0.0 but not one bound to 127.0.0.1."""
    port = secured.ready[which]["port"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


# --- HTTP: the guard ---


def test_http_missing_token(web, proto):
    resp = web.http("GET", "/api/system/ping", token=None)
    proto.http_error(resp, 401, -32001, "unauthorized")
    assert resp.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize("authorization", ["Bearer wrong-token", "Bearer ", "Basic dXNlcjpwYXNz", "wrong-token",
                                           "Token {token}", "Bearer {token}x", "Bearer x{token}"])
def test_http_wrong_token(web, proto, authorization):
    headers = {"Authorization": authorization.format(token=web.token)}
    proto.http_error(web.http("GET", "/api/system/ping", headers=headers, token=None), 401, -32001, "unauthorized")


def test_http_unauthorized_has_no_effect(web, proto):
    slug = proto.unique_slug("sneaky")
    create = proto.rpc("projects.create", {"slug": slug, "name": "Sneaky"})
    proto.http_error(web.http("POST", "/rpc", create, token=None), 401, -32001, "unauthorized")
    proto.http_error(web.http("POST", "/api/projects", {"slug": slug, "name": "Sneaky"}, token="nope"),
                     401, -32001, "unauthorized")
    # the guard runs before routing: an unknown path without the token does not reveal that it is unknown
    proto.http_error(web.http("GET", "/no/such/route", token=None), 401, -32001, "unauthorized")
    assert web.error("projects.get", {"slug": slug})["data"]["name"] == "not_found"


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1.evil.example:{port}",
                                  "localhost.evil.example:{port}"])
def test_http_foreign_host_is_forbidden(web, proto, host):
    resp = web.http("GET", "/api/system/ping", headers={"Host": host.format(port=web.port)})
    proto.http_error(resp, 403, -32003, "forbidden")


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "127.0.0.1"])
def test_http_loopback_host_is_accepted(web, host):
    assert web.http("GET", "/api/system/ping", headers={"Host": host.format(port=web.port)}).status == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1", "tauri://localhost.evil"])
def test_http_foreign_origin_is_forbidden(web, proto, origin):
    resp = web.http("GET", "/api/system/ping", headers={"Origin": origin})
    proto.http_error(resp, 403, -32003, "forbidden")
    resp = web.http("POST", "/rpc", proto.rpc("system.ping"), headers={"Origin": origin})
    proto.http_error(resp, 403, -32003, "forbidden")


@pytest.mark.parametrize("origin", ["tauri://localhost", "http://tauri.localhost", "https://tauri.localhost"])
def test_http_tauri_origin_with_token_is_accepted(web, proto, origin):
    resp = web.http("GET", "/api/system/ping", headers={"Origin": origin})
    assert resp.status == 200 and resp.json["pong"] is True
    # the right origin does not replace the token
    proto.http_error(web.http("GET", "/api/system/ping", headers={"Origin": origin}, token=None),
                     401, -32001, "unauthorized")


# --- HTTP: REST ---


def test_rest_ping(web):
    resp = web.http("GET", "/api/system/ping")
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
    assert resp.json["pong"] is True


def test_rest_project_lifecycle(web, proto):
    slug = proto.unique_slug("rest")
    resp = web.http("POST", "/api/projects", {"slug": slug, "name": "Rest", "description": "via REST"})
    assert resp.status in (200, 201), resp.body
    created = resp.json
    assert created["slug"] == slug and created["description"] == "via REST"

    resp = web.http("GET", f"/api/projects/{slug}")
    assert resp.status == 200 and resp.json["id"] == created["id"]
    # the same project through JSON-RPC on the same process
    assert web.call("projects.get", {"slug": slug})["id"] == created["id"]

    error = proto.http_error(web.http("DELETE", f"/api/projects/{slug}"), 428, -32010, "confirmation_required")
    assert error["data"]["details"]["slug"] == slug
    assert web.http("GET", f"/api/projects/{slug}").status == 200

    proto.http_error(web.http("POST", "/api/projects", {"slug": slug, "name": "Again"}), 409, -32009, "conflict")

    resp = web.http("DELETE", f"/api/projects/{slug}?confirm=true")
    assert resp.status == 200 and resp.json["id"] == created["id"]
    proto.http_error(web.http("GET", f"/api/projects/{slug}"), 404, -32004, "not_found")


def test_rest_bad_bodies(web, proto):
    resp = web.http("POST", "/api/projects", b'{"slug": "x", "name": ')
    proto.http_error(resp, 400, -32700, "parse_error")
    resp = web.http("POST", "/api/projects", {"slug": 5, "name": ["x"]})
    error = proto.http_error(resp, 422, -32602, "invalid_params")
    assert isinstance(error["data"]["details"]["errors"], list) and error["data"]["details"]["errors"]
    resp = web.http("POST", "/api/projects", [1, 2])
    proto.http_error(resp, 422, -32602, "invalid_params")


def test_rest_body_over_the_size_limit(web, proto):
    slug = proto.unique_slug("big")
    body = proto.encode({"slug": slug, "name": "Big", "settings_json": {"blob": "A" * 100_000}})
    try:
        proto.http_error(web.http("POST", "/api/projects", body), 413, -32013, "payload_too_large")
    finally:
        assert web.error("projects.get", {"slug": slug})["data"]["name"] == "not_found"


def test_rest_unknown_route(web, proto):
    error = proto.http_error(web.http("GET", "/api/no-such-thing"), 404, -32004, "not_found")
    assert error["data"]["details"] == {"path": "/api/no-such-thing"}
    proto.http_error(web.http("GET", "/"), 404, -32004, "not_found")


def test_rest_wrong_method(web, proto):
    error = proto.http_error(web.http("PUT", "/api/system/ping"), 405, -32005, "method_not_allowed")
    assert "GET" in error["data"]["details"]["allowed"]
    proto.http_error(web.http("GET", "/rpc"), 405, -32005, "method_not_allowed")


def test_openapi_document(web):
    resp = web.http("GET", "/openapi.json")
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json
    assert doc["openapi"].startswith("3.1")
    assert "/api/projects" in doc["paths"] and "/rpc" in doc["paths"]
    assert {"get", "post"} <= set(doc["paths"]["/api/projects"])
    assert "/api/projects/{slug}" in doc["paths"]
    assert doc["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_openapi_needs_the_token(web, proto):
    proto.http_error(web.http("GET", "/openapi.json", token=None), 401, -32001, "unauthorized")


# --- TCP: authenticate first ---


def test_tcp_request_before_auth_is_refused_without_effect(tcp, proto):
    slug = proto.unique_slug("early")
    client = tcp(authenticate=False)
    proto.error_response(client.request(proto.rpc("system.ping", id=1)), -32001, "unauthorized", request_id=1)
    reply = client.request(proto.rpc("projects.create", {"slug": slug, "name": "Early"}, id=2))
    proto.error_response(reply, -32001, "unauthorized", request_id=2)
    reply = client.request([proto.rpc("projects.create", {"slug": slug, "name": "Early"}, id=3)])
    proto.error_response(reply[0], -32001, "unauthorized", request_id=3)
    # a notification before auth is dropped too
    assert client.request(proto.notify("projects.create", {"slug": slug, "name": "Early"})) is None
    client.authenticate()
    assert client.call("system.ping")["pong"] is True
    assert client.error("projects.get", {"slug": slug})["data"]["name"] == "not_found"


def test_tcp_wrong_token_closes_the_connection(tcp, proto, secured):
    client = tcp(authenticate=False)
    reply = client.authenticate(token="not-the-token")
    proto.error_response(reply, -32001, "unauthorized", request_id="auth")
    assert client.reader.eof.wait(2.0), "the server kept the connection open after a wrong token"
    # the server still serves everyone else
    assert tcp().call("system.ping")["pong"] is True


def test_tcp_wrong_token_type_is_invalid_params(tcp, proto):
    client = tcp(authenticate=False)
    reply = client.request({"jsonrpc": "2.0", "id": "auth", "method": "system.auth", "params": {"token": 123}})
    proto.error_response(reply, -32602, "invalid_params", request_id="auth")
    client.authenticate()  # still possible on the same connection
    assert client.call("system.ping")["pong"] is True


def test_tcp_after_auth_calls_work(tcp, proto):
    client = tcp()
    slug = proto.unique_slug("tcp")
    created = client.call("projects.create", {"slug": slug, "name": "Tcp"})
    assert client.call("projects.get", {"slug": slug})["id"] == created["id"]
    assert slug in [p["slug"] for p in client.call("projects.list")["items"]]


def test_tcp_oversize_before_auth(tcp, proto):
    client = tcp(authenticate=False)
    client.send_raw(b"x" * (proto.MAX_MESSAGE_BYTES + 35_000) + b"\n")
    proto.error_response(client.reader.next_reply(), -32013, "payload_too_large", request_id=None)
    proto.error_response(client.request(proto.rpc("system.ping", id=1)), -32001, "unauthorized", request_id=1)


# --- last: the token never reached the logs (runs after everything above used it) ---


def test_token_not_in_stderr_or_log(secured, web, tcp):
    tcp().call("system.ping")
    web.http("GET", "/api/system/ping")
    web.http("GET", "/api/system/ping", headers={"Host": "evil.example"})
    token = secured.ready["token"]
    stderr, log = secured.stderr_text(), secured.log_text()
    assert log, "no log file at $IAT_HOME/logs/sidecar.log"
    assert token not in stderr
    assert token not in log
