"""The one event bus: domain code publishes `(name, payload)` after its change is committed, and every subscriber
(each transport's peers, in-process listeners) receives it on the bus's own delivery thread.

`publish` never waits for a subscriber: it only queues. Subscribers must not block either; the transports hand
each event to a peer's bounded outbox (iat.rpc.outbox), so one peer that stops reading delays nobody else.
Transports wrap events as JSON-RPC notifications; the domain never builds a wire message.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

Subscriber = Callable[[str, dict], None]

# Events queued for delivery before publish starts dropping them (a subscriber stuck for this long is a bug).
MAX_PENDING = 10_000
_STOP = object()


class EventBus:
    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._closed = False
        # Called (outside the lock) on each subscribe: the App starts its studio event bridge once a client listens.
        self.on_subscribe: Callable[[], object] | None = None

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(fn)
        if self.on_subscribe is not None:
            self.on_subscribe()

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, name: str, payload: dict) -> None:
        with self._lock:
            if self._closed or not self._subscribers:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="iat-events", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((name, payload))
        except queue.Full:
            log.error("event %s dropped: %d events wait for delivery", name, self._queue.qsize())

    def drain(self, timeout: float = 5.0) -> bool:
        """Waits until every event published so far was delivered (tests, shutdown); False on timeout."""
        done = threading.Event()
        with self._lock:
            if self._thread is None:
                return True
        try:
            self._queue.put((done.set, None), timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Delivers what is queued (within `timeout`), then stops the delivery thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            name, payload = item
            if callable(name):  # a drain marker
                name()
                continue
            with self._lock:
                subscribers = list(self._subscribers)
            for fn in subscribers:
                try:
                    fn(name, payload)
                except Exception:  # noqa: BLE001 - one broken subscriber must not stop the others
                    log.warning("a subscriber failed on event %s", name, exc_info=True)
