"""The websocket at GET /ws on the real process: a message over the size limit is answered with payload_too_large
(like on every other transport) before any close; the Host and Origin checks refuse the upgrade with 403; the Tauri
origins and those IAT_ALLOWED_ORIGINS adds are let in; a batch gets one batch reply."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest

from ws_client import WsPeer

pytestmark = pytest.mark.process

TAURI_ORIGINS = ("tauri://localhost", "http://tauri.localhost", "https://tauri.localhost")  # iat/settings.py
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.fixture(scope="module")
def web_process(tmp_path_factory, proto):
    process = proto.SidecarProcess(("http",), tmp_path_factory.mktemp("ws") / "home")
    try:
        process.connect("http")  # polls until HTTP answers
        yield process
        assert process.stop() == 0
        assert not process.stdout.garbage
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def web(web_process):
    return web_process.connect("http")


@pytest.fixture
def peers(web_process):
    opened: list[WsPeer] = []

    def open_peer(process=None, **kw) -> WsPeer:
        peer = WsPeer(process or web_process, **kw)
        opened.append(peer)
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


def ping_ok(peer: WsPeer, proto) -> None:
    request_id = f"p-{uuid.uuid4().hex[:8]}"
    peer.send(proto.rpc("system.ping", id=request_id))
    assert proto.result(peer.reply(request_id), request_id)["pong"] is True


# --- size limit ---


def test_oversize_message_is_answered_payload_too_large_before_any_close(web_process, web, peers, proto):
    slug = proto.unique_slug("ws-big")
    big = json.dumps({"jsonrpc": "2.0", "method": "projects.create", "id": "ws-big",
                      "params": {"slug": slug, "name": "Big", "settings_json": {"blob": "A" * 100_000}}})
    assert len(big.encode()) > 100_000 > proto.MAX_MESSAGE_BYTES
    peer = peers()
    ping_ok(peer, proto)
    peer.send(big)
    frame = peer.receive()
    assert frame.type == aiohttp.WSMsgType.TEXT, (
        f"the first frame after an oversize message is {frame.type.name} {frame.data!r} "
        f"(close code {peer.ws.close_code}), not a payload_too_large reply")
    error = proto.error_response(json.loads(frame.data), -32013, "payload_too_large")
    assert error["data"]["details"].get("limit_bytes") == proto.MAX_MESSAGE_BYTES
    # Then the server may close (1009: message too big) or keep the connection: a ping behind it is answered, or
    # the next frame is that close.
    nxt = f"after-{uuid.uuid4().hex[:6]}"
    try:
        peer.send(proto.rpc("system.ping", id=nxt))
    except (ConnectionError, aiohttp.ClientError):
        pass  # already closing: the close frame is read below
    frame = peer.receive()
    if frame.type == aiohttp.WSMsgType.TEXT:
        assert proto.result(json.loads(frame.data), nxt)["pong"] is True
    else:
        assert (frame.type, frame.data) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.MESSAGE_TOO_BIG), frame
    # Nothing of the oversize message ran, and the server still serves.
    assert web.error("projects.get", {"slug": slug})["data"]["name"] == "not_found"
    ping_ok(peers(), proto)


def test_message_just_under_the_limit_is_accepted(peers, proto):
    slug = proto.unique_slug("ws-under")
    head = {"jsonrpc": "2.0", "method": "projects.create", "id": "ws-under",
            "params": {"slug": slug, "name": "Under", "settings_json": {"blob": ""}}}
    head["params"]["settings_json"]["blob"] = "B" * (proto.MAX_MESSAGE_BYTES - len(proto.encode(head)) - 64)
    assert len(proto.encode(head)) < proto.MAX_MESSAGE_BYTES
    peer = peers()
    peer.send(head)
    assert proto.result(peer.reply("ws-under"), "ws-under")["slug"] == slug


# --- batches ---


def test_batch_gets_one_batch_reply(peers, proto, web):
    slug = proto.unique_slug("ws-batch")
    batch = [proto.rpc("system.ping", id="b-ping"),
             proto.rpc("projects.create", {"slug": slug, "name": "Batch"}, id="b-create"),
             proto.notify("system.ping"),
             proto.rpc("projects.get", {"slug": "no-such-project"}, id="b-missing")]
    peer = peers()
    peer.send(batch)
    reply = peer.reply(["b-ping", "b-create", "b-missing"])
    assert isinstance(reply, list) and len(reply) == 3, reply  # nothing for the notification
    by_id = {r["id"]: r for r in reply}
    assert set(by_id) == {"b-ping", "b-create", "b-missing"}
    assert proto.result(by_id["b-ping"], "b-ping")["pong"] is True
    assert proto.result(by_id["b-create"], "b-create")["slug"] == slug
    proto.error_response(by_id["b-missing"], -32004, "not_found", request_id="b-missing")
    assert web.call("projects.get", {"slug": slug})["name"] == "Batch"


def test_batch_of_notifications_gets_no_reply(peers, proto):
    peer = peers()
    peer.send([proto.notify("system.ping"), proto.notify("system.ping")])
    peer.send(proto.rpc("system.ping", id="behind"))
    frame = peer.receive()  # the first thing back is the answer to the ping behind the batch
    assert frame.type == aiohttp.WSMsgType.TEXT
    assert proto.result(json.loads(frame.data), "behind")["pong"] is True


# --- Host and Origin: checked before the upgrade ---


def refused_upgrade(web, proto, headers: dict[str, str]) -> None:
    """A plain HTTP upgrade request: 403 with the one error body, and no switch of protocols."""
    resp = web.http("GET", "/ws", headers={**UPGRADE, **headers})
    proto.http_error(resp, 403, -32003, "forbidden")
    assert "upgrade" not in {k.lower() for k in resp.headers}, resp.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "10.0.0.1"])
def test_foreign_host_is_refused_before_the_upgrade(web, proto, host):
    refused_upgrade(web, proto, {"Host": host.format(port=web.port)})


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1", "tauri://localhost.evil",
                                    "http://tauri.localhost:8080"])
def test_foreign_origin_is_refused_before_the_upgrade(web, proto, origin):
    refused_upgrade(web, proto, {"Origin": origin})


def test_refused_upgrade_with_aiohttp(web_process):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        WsPeer(web_process, headers={"Origin": "https://evil.example"})
    assert info.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        WsPeer(web_process, headers={"Host": "evil.example"})
    assert info.value.status == 403


@pytest.mark.parametrize("origin", TAURI_ORIGINS)
def test_tauri_origins_are_let_in(peers, proto, origin):
    ping_ok(peers(headers={"Origin": origin}), proto)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
def test_loopback_hosts_are_let_in(peers, proto, web, host):
    ping_ok(peers(headers={"Host": host.format(port=web.port)}), proto)


def test_a_tauri_origin_does_not_replace_the_token(web_process):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        WsPeer(web_process, headers={"Origin": TAURI_ORIGINS[0]}, token="not-the-token")
    assert info.value.status == 401


def test_iat_allowed_origins_adds_origins(launch, proto, tmp_path):
    extra = ("https://extra.example", "http://localhost:1420")
    process = launch("http", env={"IAT_ALLOWED_ORIGINS": f" {extra[0]} ,{extra[1]},"})
    web = process.connect("http")
    opened = []
    try:
        for origin in (*extra, *TAURI_ORIGINS):  # added to the Tauri origins, not instead of them
            peer = WsPeer(process, headers={"Origin": origin})
            opened.append(peer)
            ping_ok(peer, proto)
            resp = web.http("POST", "/rpc", proto.rpc("system.ping", id=1), headers={"Origin": origin})
            assert resp.status == 200 and resp.json["result"]["pong"] is True, (origin, resp.body)
        for origin in ("https://evil.example", "https://extra.example.evil", "http://localhost:1421"):
            refused_upgrade(web, proto, {"Origin": origin})
    finally:
        for peer in opened:
            peer.close()
    assert process.stop() == 0
