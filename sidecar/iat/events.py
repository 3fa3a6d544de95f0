"""The one event bus: domain code publishes after its change is committed; every connected peer that can receive
notifications (stdio parent, socket and websocket connections) gets a JSON-RPC notification whose method is the
event name (e.g. `project.created`)."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)

Subscriber = Callable[[dict], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: str, params: dict) -> None:
        from iat.rpc.protocol import notification

        message = notification(event, params)
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            try:
                fn(message)
            except Exception:  # noqa: BLE001 - one broken peer must not stop the others
                log.warning("dropping event %s for a subscriber that failed", event, exc_info=True)
