"""Events across workstations: the events of studio projects travel between sidecars through PostgreSQL's
LISTEN/NOTIFY on the studio database.

Every event this sidecar publishes for a studio project (a payload with the `project_id` of a project opened here
on the shared database) is sent with NOTIFY on the channel `iat_events`, with this sidecar's origin; the events
other sidecars sent are published on the local bus with `origin` added to their payload
(`{"sidecar_id", "host", "pid"}`), so this sidecar's clients (stdio, socket, websocket) see them as they see
local ones, and can tell them apart. Events carry ids and names, never secrets.

NOTIFY payloads are limited to 8000 bytes: a bigger event is sent trimmed to its ids (`*_id`, `id`, `slug`,
`status`, `name`) with `"trimmed": true`, and a client that needs the rest reads it.

One thread and one dedicated connection per sidecar: it waits in select() on the connection's socket and a wake-up
pipe (1 s at most, so closing it is prompt), sends what the bus queued, and reconnects with backoff when the server
goes away. NOTIFY is not a queue: what other sidecars publish while this one is disconnected is lost, so after a
reconnection the bridge publishes `studio.events_resumed` (clients re-read what they show).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import socket
import threading
import uuid
from typing import TYPE_CHECKING

from iat.studio import catalog

if TYPE_CHECKING:
    from iat.app import App

log = logging.getLogger(__name__)

CHANNEL = "iat_events"
MAX_PAYLOAD_BYTES = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; room for the envelope's slack
MAX_QUEUED = 1000
WAIT_S = 1.0  # select()'s timeout: the longest a close waits for the thread
BACKOFF_S = (0.5, 30.0)  # first and longest wait between reconnection attempts
_KEPT_KEYS = {"id", "slug", "status", "name", "event", "kind", "op"}


def _trim(payload: dict) -> dict:
    kept = {k: v for k, v in payload.items()
            if (k in _KEPT_KEYS or k.endswith("_id")) and isinstance(v, (str, int, float, bool, type(None)))}
    return {**kept, "trimmed": True}


def encode(origin: dict, name: str, payload: dict) -> str | None:
    """The NOTIFY payload of one event, trimmed to its ids when too long; None when even that is too long."""
    text = json.dumps({"origin": origin, "event": name, "payload": payload}, default=str, separators=(",", ":"))
    if len(text.encode()) <= MAX_PAYLOAD_BYTES:
        return text
    text = json.dumps({"origin": origin, "event": name, "payload": _trim(payload)}, default=str,
                      separators=(",", ":"))
    return text if len(text.encode()) <= MAX_PAYLOAD_BYTES else None


class StudioBridge:
    def __init__(self, app: App, url: str) -> None:
        self.app = app
        self.url = url
        self.origin = {"sidecar_id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.listening = threading.Event()  # set while LISTEN is in force (tests, status)
        self._projects: set[str] = set()  # studio projects opened here: only their events cross
        self._outbox: queue.Queue = queue.Queue(MAX_QUEUED)
        self._held: str | None = None  # a NOTIFY whose send failed: sent first after reconnecting
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unsubscribe = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def sidecar_id(self) -> str:
        return self.origin["sidecar_id"]

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="iat-studio-events", daemon=True)
        self._unsubscribe = self.app.events.subscribe(self._on_event)
        self._thread.start()

    def watch(self, project_id: str) -> None:
        """A studio project opened here: its events from now on go to the other workstations."""
        self._projects.add(project_id)
        self.start()

    def close(self, timeout: float = 2.0) -> None:
        """Sends what is queued (within `timeout`), then stops the thread and closes the connection."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._wake()
        if thread is not None:
            thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the bus's side (its delivery thread: never blocks) ---

    def _on_event(self, name: str, payload: dict) -> None:
        if not isinstance(payload, dict) or "origin" in payload:  # another sidecar's event: never sent back
            return
        if payload.get("project_id") not in self._projects:
            return
        text = encode(self.origin, name, payload)
        if text is None:
            log.warning("event %s not sent to other workstations: too big even trimmed to its ids", name)
            return
        try:
            self._outbox.put_nowait(text)
        except queue.Full:
            log.warning("event %s not sent to other workstations: %d wait to be sent", name, MAX_QUEUED)
            return
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    # --- the connection's thread ---

    def _run(self) -> None:
        import psycopg2

        backoff, connected_before = BACKOFF_S[0], False
        while not self._stop.is_set():
            try:
                conn = catalog.open_connection(self.url, keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                               keepalives_count=3)
            except Exception as exc:  # noqa: BLE001 - unreachable for now: try again later
                log.warning("studio events: cannot connect (%s); again in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                backoff = BACKOFF_S[0]
                if connected_before:  # what others published meanwhile is lost: clients re-read
                    self.app.events.publish("studio.events_resumed", {"origin": None})
                connected_before = True
                self._serve(conn)
            except (psycopg2.Error, OSError) as exc:
                if not self._stop.is_set():
                    log.warning("studio events: connection lost (%s); reconnecting", exc)
            finally:
                self.listening.clear()
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
            if not self._stop.is_set():
                self._stop.wait(backoff)

    def _serve(self, conn) -> None:
        while True:
            self._send(conn)
            if self._stop.is_set():
                return
            readable, _, _ = select.select([conn, self._wake_r], [], [], WAIT_S)
            if self._wake_r in readable:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            conn.poll()
            while conn.notifies:
                self._receive(conn.notifies.pop(0).payload)

    def _send(self, conn) -> None:
        while True:
            if self._held is None:
                try:
                    self._held = self._outbox.get_nowait()
                except queue.Empty:
                    return
            with conn.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._held))
            self._held = None

    def _receive(self, text: str) -> None:
        try:
            message = json.loads(text)
            origin, name, payload = message["origin"], message["event"], message["payload"]
        except (ValueError, KeyError, TypeError):
            log.warning("studio events: a notification that is not ours on %s", CHANNEL)
            return
        if not isinstance(origin, dict) or origin.get("sidecar_id") == self.sidecar_id:
            return  # our own, echoed back
        if isinstance(name, str) and isinstance(payload, dict):
            self.app.events.publish(name, {**payload, "origin": origin})
