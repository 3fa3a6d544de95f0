"""A peer's bounded queue of outgoing messages and the one thread that writes them.

Replies and notifications for a peer go through its outbox, so a handler or the event bus never blocks on a peer's
socket or pipe. A peer that falls too far behind (it stopped reading) is dropped with a log line: its outbox is
closed and `on_overflow` runs (the transport closes the connection); nothing else waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

_STOP = object()


class Outbox:
    def __init__(self, write: Callable[[bytes], None], *, peer: str, max_messages: int = 4096,
                 max_bytes: int = 64 * 1024 * 1024, on_overflow: Callable[[], None] | None = None):
        self.peer = peer
        self._write = write
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._queue: queue.Queue = queue.Queue(max_messages)
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=f"iat-out-{peer}", daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> bool:
        """Queues one message without waiting; False when the peer is gone or was just dropped for lagging."""
        with self._lock:
            if self.closed:
                return False
            if self._pending_bytes + len(data) > self._max_bytes:
                overflow = True
            else:
                try:
                    self._queue.put_nowait(data)
                    self._pending_bytes += len(data)
                    overflow = False
                except queue.Full:
                    overflow = True
            if overflow:
                self.closed = True
        if overflow:
            log.warning("peer %s fell behind (%d messages, %d bytes unread); dropping it", self.peer,
                        self._queue.qsize(), self._pending_bytes)
            if self._on_overflow is not None:
                self._on_overflow()
        return not overflow

    def close(self, timeout: float = 1.0) -> None:
        """Writes what is queued (within `timeout`), then stops the writer thread."""
        with self._lock:
            self.closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is _STOP:
                return
            with self._lock:
                self._pending_bytes -= len(data)
            try:
                self._write(data)
            except (OSError, ValueError, RuntimeError) as exc:  # the peer left (or its stream closed)
                log.debug("peer %s left before its messages were written: %s", self.peer, exc)
                with self._lock:
                    self.closed = True
                return
