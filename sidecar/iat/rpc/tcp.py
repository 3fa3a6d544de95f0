"""Newline-delimited JSON-RPC on a loopback TCP socket, for power users and tools.

A peer must first call `system.auth` with the per-start token; until then every other method is refused, a wrong
token closes the connection, and no event notification is sent to it.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from concurrent.futures import Executor

from iat.errors import PayloadTooLarge
from iat.rpc.protocol import Dispatcher, Session, error_response
from iat.rpc.stdio import LineWriter, read_lines

log = logging.getLogger(__name__)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, port: int, transport: TcpTransport):
        self.transport = transport
        super().__init__(("127.0.0.1", port), _Connection)


class _Connection(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        transport = self.server.transport
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer = LineWriter(self.wfile)
        session = Session("tcp", authenticated=False)

        def push(message: dict) -> None:
            if session.authenticated:
                writer.write(message)

        session.push = push
        unsubscribe = transport.dispatcher.app.events.subscribe(push)
        transport.connections.add(self.request)
        try:
            for line in read_lines(self.rfile, transport.max_message_bytes):
                if isinstance(line, PayloadTooLarge):
                    writer.write(error_response(None, line))
                elif not session.authenticated:
                    # Handled in order, on this thread: nothing runs before the token is checked.
                    transport.handle(line, session, writer)
                    if session.data.get("auth_failed"):
                        return
                else:
                    transport.dispatcher.submit(transport.executor, line, session, transport.safe_writer(writer))
        except (ConnectionError, OSError):
            pass
        finally:
            unsubscribe()
            transport.connections.discard(self.request)


class TcpTransport:
    def __init__(self, dispatcher: Dispatcher, executor: Executor, port: int, max_message_bytes: int):
        self.dispatcher = dispatcher
        self.executor = executor
        self.max_message_bytes = max_message_bytes
        self.connections: set[socket.socket] = set()
        self._server = _Server(port, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="iat-tcp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def handle(self, line: bytes, session: Session, writer: LineWriter) -> None:
        reply = self.dispatcher.handle_bytes(line, session)
        if reply is not None:
            self.safe_writer(writer)(reply)

    @staticmethod
    def safe_writer(writer: LineWriter):
        def write(data: bytes) -> None:
            try:
                writer.write(data)
            except OSError:
                log.debug("peer left before its answer was written")

        return write

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
