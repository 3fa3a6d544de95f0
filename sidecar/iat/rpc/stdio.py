"""Newline-delimited JSON-RPC over the sidecar's stdin/stdout: the Tauri shell's channel.

stdout carries protocol lines only: at start the real stdout is kept for the protocol and file descriptor 1 is
pointed at stderr, so a stray print (ours or a library's, Python or C) can never corrupt the stream.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import Executor
from typing import BinaryIO

from iat.context import Session
from iat.errors import PayloadTooLarge
from iat.rpc.outbox import Outbox
from iat.rpc.protocol import Dispatcher, encode, error_response, notification

log = logging.getLogger(__name__)


def claim_stdout() -> BinaryIO:
    """Returns an unbuffered binary stream on the original stdout and sends everything else to stderr."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


class LineWriter:
    """Writes whole lines from any thread (one write call per message, so lines never interleave)."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, message: dict | bytes) -> None:
        data = message if isinstance(message, bytes) else encode(message)
        with self._lock:
            self._stream.write(data + b"\n")


class StdioTransport:
    def __init__(self, dispatcher: Dispatcher, executor: Executor, writer: LineWriter, stdin: BinaryIO,
                 max_message_bytes: int):
        self.dispatcher = dispatcher
        self.executor = executor
        self.stdin = stdin
        self.max_message_bytes = max_message_bytes
        # The parent owns the pipe: no token needed. A parent that stops reading for this long is hung or gone.
        self.outbox = Outbox(writer.write, peer="stdio", max_messages=100_000, max_bytes=256 * 1024 * 1024,
                             on_overflow=self._parent_lags)
        self.session = Session("stdio", authenticated=True,
                               push=lambda name, payload: self.outbox.send(encode(notification(name, payload))))

    def _parent_lags(self) -> None:
        log.error("the parent stopped reading stdout; shutting down")
        self.dispatcher.app.shutdown_requested.set()

    def run(self) -> None:
        """Reads until end of input; each message is handled on the executor, answers written as they finish."""
        unsubscribe = self.dispatcher.app.events.subscribe(self.session.push)
        try:
            for line in read_lines(self.stdin, self.max_message_bytes):
                if isinstance(line, PayloadTooLarge):
                    self.outbox.send(encode(error_response(None, line)))
                else:
                    self.dispatcher.submit(self.executor, line, self.session, self.outbox.send)
        finally:
            unsubscribe()

    def close(self) -> None:
        """Writes the answers still queued; call once the calls admitted before the stop have finished."""
        self.outbox.close()


def read_lines(stream: BinaryIO, limit: int):
    """Yields each non-empty line (without its newline), or a PayloadTooLarge for a line over `limit` bytes
    (whose rest is read and dropped, so the next message is read intact)."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:
                rest = stream.readline(1 << 16)
                if not rest or rest.endswith(b"\n"):
                    break
            yield PayloadTooLarge(f"message over the {limit}-byte limit", details={"limit_bytes": limit})
            continue
        line = line.strip()
        if line:
            yield line
