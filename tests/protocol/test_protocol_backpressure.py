"""A peer that stops reading delays nobody else: its replies and events wait in its own bounded outbox, and when
that is full the peer is dropped with a log line. Against the real process."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.process

OUTBOX = 32  # IAT_PEER_OUTBOX_MESSAGES for these processes: a stuck peer overflows quickly


def _stuck_peer(process, proto) -> socket.socket:
    """An authenticated socket peer that floods requests with large replies and never reads them again."""
    sock = socket.create_connection(("127.0.0.1", process.ready["tcp"]["port"]), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(json.dumps({"jsonrpc": "2.0", "id": "a", "method": "system.auth",
                             "params": {"token": process.ready["token"]}}).encode() + b"\n")
    assert b'"authenticated":true' in sock.makefile("rb").readline()
    big_id = "x" * 60_000  # every reply echoes it: megabytes the peer never reads
    flood = b"".join(json.dumps(proto.rpc("system.ping", id=f"{big_id}{i}")).encode() + b"\n" for i in range(400))

    def send() -> None:
        try:
            sock.sendall(flood)
        except OSError:
            pass  # dropped by the sidecar mid-flood: what the test expects

    threading.Thread(target=send, daemon=True).start()
    return sock


def test_a_socket_peer_that_never_reads_does_not_delay_the_others(launch, proto):
    process = launch("stdio", "tcp", env={"IAT_PEER_OUTBOX_MESSAGES": str(OUTBOX)})
    parent = process.connect("stdio")
    other = process.connect("tcp")
    stuck = _stuck_peer(process, proto)
    try:
        # Events for the stuck peer pile up too while the others work.
        for i in range(60):
            assert parent.call("system.ping")["pong"] is True
            slug = proto.unique_slug(f"bp{i}")
            assert other.call("projects.create", {"slug": slug, "name": f"P{i}"})["slug"] == slug
        deadline = time.monotonic() + 10
        while "fell behind" not in process.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "fell behind" in process.stderr_text() and "dropping it" in process.stderr_text()
        # Dropped: the sidecar closed its side; what the peer reads ends (after what was already sent).
        stuck.settimeout(10)
        while stuck.recv(1 << 20):
            pass
        assert other.call("system.ping")["pong"] is True
    finally:
        stuck.close()
        other.close()
    assert process.stop() == 0


@pytest.mark.parametrize("sidecar", ["http"], indirect=True)
def test_websocket_peer_gets_payload_too_large_before_the_close(sidecar, proto):
    """Every transport answers an oversized message with payload_too_large; the websocket then closes (1009)."""
    import aiohttp
    import asyncio

    async def run() -> tuple[dict, int | None]:
        http = sidecar.process.ready["http"]
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{http['port']}/ws", headers={
                    "Authorization": f"Bearer {sidecar.process.ready['token']}"}) as ws:
                await ws.send_str(json.dumps(proto.rpc("system.echo", {"x": "y" * 200_000}, id="big")))
                frame = await ws.receive(timeout=10)
                assert frame.type == aiohttp.WSMsgType.TEXT, frame
                closing = await ws.receive(timeout=10)
                return json.loads(frame.data), ws.close_code if closing.type else None

    reply, code = asyncio.run(run())
    proto.error_response(reply, -32013, "payload_too_large", request_id=None)
    assert code == 1009
