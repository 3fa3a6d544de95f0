"""Notifications from the sidecar: a committed change is pushed to every peer that can receive pushes (the stdio
parent, authenticated socket peers, websocket peers at GET /ws); POST /rpc cannot push."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.process


def test_project_created_is_pushed(sidecar, proto):
    slug = proto.unique_slug("pushed")
    if sidecar.transport == "http":
        # POST /rpc has no push channel: the websocket carries both the reply and the notification.
        request = proto.rpc("projects.create", {"slug": slug, "name": "Pushed"}, id="ws-create")

        def done(received: list[dict]) -> bool:
            return (any(m.get("id") == "ws-create" for m in received)
                    and any(m.get("method") == "project.created" and m["params"].get("slug") == slug
                            for m in received))

        received = sidecar.ws_exchange([request], until=done)
        reply = next(m for m in received if m.get("id") == "ws-create")
        note = next(m for m in received if m.get("method") == "project.created")
        assert sidecar.notifications == []
    else:
        reply = sidecar.request(proto.rpc("projects.create", {"slug": slug, "name": "Pushed"}, id="create"))
        note = sidecar.wait_notification("project.created", lambda p: p.get("slug") == slug)
    project = proto.result(reply, reply["id"])
    assert note == {"jsonrpc": "2.0", "method": "project.created",
                    "params": {"project_id": project["id"], "slug": slug, "name": "Pushed"}}


@pytest.mark.parametrize("sidecar", ["stdio", "tcp"], indirect=True)  # pushing peers
def test_project_updated_is_pushed(sidecar, proto):
    slug = proto.unique_slug("upd")
    project = sidecar.call("projects.create", {"slug": slug, "name": "Before"})
    sidecar.call("projects.update", {"slug": slug, "name": "After"})
    note = sidecar.wait_notification("project.updated", lambda p: p.get("slug") == slug)
    assert note["params"] == {"project_id": project["id"], "slug": slug}


@pytest.mark.parametrize("sidecar", ["http"], indirect=True)
def test_websocket_answers_json_rpc_and_errors(sidecar, proto):
    messages = [proto.rpc("system.ping", id="ws-ping"), b'{"broken', [1],
                proto.notify("system.ping"), proto.rpc("projects.get", {"slug": "no-such"}, id="ws-missing")]
    received = sidecar.ws_exchange(messages, until=lambda r: len(r) >= 4)
    by_id = {}
    for msg in received:
        key = "batch" if isinstance(msg, list) else msg["id"]
        by_id.setdefault(key, []).append(msg)
    assert proto.result(by_id["ws-ping"][0], "ws-ping")["pong"] is True
    proto.error_response(by_id[None][0], -32700, "parse_error", request_id=None)
    proto.error_response(by_id["batch"][0][0], -32600, "invalid_request", request_id=None)
    proto.error_response(by_id["ws-missing"][0], -32004, "not_found", request_id="ws-missing")


@pytest.mark.parametrize("sidecar", ["http"], indirect=True)
@pytest.mark.parametrize("case", ["no-token", "wrong-token", "evil-origin"])
def test_websocket_refuses_unauthenticated(sidecar, case):
    import aiohttp

    headers = {"no-token": {"Authorization": ""}, "wrong-token": {"Authorization": "Bearer nope"},
               "evil-origin": {"Origin": "https://evil.example"}}[case]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        sidecar.ws_exchange([], until=lambda r: True, headers=headers)
    assert info.value.status == (403 if case == "evil-origin" else 401)


@pytest.mark.parametrize("sidecar", ["tcp"], indirect=True)
def test_unauthenticated_tcp_peer_gets_no_events(sidecar, proto):
    stranger = proto.TcpClient(sidecar.process, authenticate=False)
    try:
        slug = proto.unique_slug("secret")
        sidecar.call("projects.create", {"slug": slug, "name": "Secret"})
        sidecar.wait_notification("project.created", lambda p: p.get("slug") == slug)
        # The event was published (synchronously) before the create's reply: a round trip on the stranger's
        # connection after it shows nothing was queued for it.
        proto.error_response(stranger.request(proto.rpc("system.ping", id="x")), -32001, "unauthorized",
                             request_id="x")
        assert stranger.notifications == []
    finally:
        stranger.close()


def test_events_reach_every_pushing_peer_across_transports(launch, proto):
    """One process serving all three: a change made over REST reaches the stdio parent and an authenticated socket
    peer; a deletion made over the socket reaches the stdio parent."""
    process = launch("stdio", "tcp", "http")
    parent = process.connect("stdio")
    peer = process.connect("tcp")
    web = process.connect("http")
    slug = proto.unique_slug("across")
    resp = web.http("POST", "/api/projects", {"slug": slug, "name": "Across"})
    assert resp.status in (200, 201), resp.body
    expected = {"project_id": resp.json["id"], "slug": slug, "name": "Across"}
    for client in (parent, peer):
        note = client.wait_notification("project.created", lambda p: p.get("slug") == slug)
        assert note["params"] == expected
    peer.call("projects.delete", {"slug": slug, "confirm": True})
    note = parent.wait_notification("project.deleted", lambda p: p.get("slug") == slug)
    assert note["params"] == {"project_id": resp.json["id"], "slug": slug}
    peer.close()
    assert process.stop() == 0
    assert not process.ready_file.exists()
