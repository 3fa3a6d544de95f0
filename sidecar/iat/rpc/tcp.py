"""Newline-delimited JSON-RPC on a loopback TCP socket, for power users and tools.

A peer must first call `system.auth` with the per-start token; until then every other method is refused, a wrong
token closes the connection, and no event notification is sent to it. Everything sent to a peer goes through its
outbox (iat.rpc.outbox): a peer that stops reading is dropped and delays nobody else.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from concurrent.futures import Executor

from iat.context import Session
from iat.errors import PayloadTooLarge
from iat.rpc.outbox import Outbox
from iat.rpc.protocol import Dispatcher, encode, error_response, notification
from iat.rpc.stdio import read_lines

log = logging.getLogger(__name__)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, port: int, transport: TcpTransport):
        self.transport = transport
        super().__init__(("127.0.0.1", port), _Connection)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Connection(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        transport = self.server.transport
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = "tcp:{}:{}".format(*self.client_address[:2])
        outbox = Outbox(lambda data: self.wfile.write(data + b"\n"), peer=peer,
                        max_messages=transport.max_peer_messages, on_overflow=lambda: _hang_up(sock))
        session = Session("tcp", authenticated=False)

        def push(name: str, payload: dict) -> None:
            if session.authenticated:
                outbox.send(encode(notification(name, payload)))

        session.push = push
        unsubscribe = transport.dispatcher.app.events.subscribe(push)
        transport.connections[sock] = outbox
        try:
            for line in read_lines(self.rfile, transport.max_message_bytes):
                if isinstance(line, PayloadTooLarge):
                    outbox.send(encode(error_response(None, line)))
                elif not session.authenticated:
                    # Handled in order, on this thread: nothing runs before the token is checked.
                    reply = transport.dispatcher.handle_bytes(line, session)
                    if reply is not None:
                        outbox.send(reply)
                    if session.data.get("auth_failed"):
                        outbox.close()  # the refusal is written before the connection closes
                        return
                else:
                    transport.dispatcher.submit(transport.executor, line, session, outbox.send)
        except (ConnectionError, OSError):
            pass
        finally:
            unsubscribe()
            transport.connections.pop(sock, None)
            outbox.close()


class TcpTransport:
    def __init__(self, dispatcher: Dispatcher, executor: Executor, port: int, max_message_bytes: int,
                 max_peer_messages: int = 4096):
        self.dispatcher = dispatcher
        self.executor = executor
        self.max_message_bytes = max_message_bytes
        self.max_peer_messages = max_peer_messages
        self.connections: dict[socket.socket, Outbox] = {}
        self._server = _Server(port, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="iat-tcp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops listening, writes what each peer's outbox holds, and closes every connection."""
        self._server.shutdown()
        self._server.server_close()
        for sock, outbox in list(self.connections.items()):
            outbox.close(timeout=0.2)
            _hang_up(sock)
