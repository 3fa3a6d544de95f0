"""The running sidecar: starts the transports asked for, announces `sidecar.ready`, stops gracefully.

Stop sequence (end of stdin, SIGTERM/SIGINT, system.shutdown, parent death), within 2 s: refuse new calls, stop
the socket and HTTP servers, let in-flight calls finish, close every database (queued writes land, WAL folded
back), remove the ready file.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from iat.app import App
from iat.lifecycle import remove_ready_file, watch_parent, write_ready_file
from iat.rpc.protocol import Dispatcher, notification
from iat.rpc.stdio import LineWriter, StdioTransport

log = logging.getLogger(__name__)

STOP_BUDGET_S = 2.0


class Sidecar:
    def __init__(self, app: App, *, stdio_in: BinaryIO | None, out: LineWriter, tcp_port: int | None,
                 http_port: int | None):
        self.app = app
        self.out = out
        self.stdio_in = stdio_in
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.dispatcher = Dispatcher(app)
        self.executor = ThreadPoolExecutor(app.settings.worker_threads, thread_name_prefix="iat-call")
        self._servers: list = []
        self._stdio: StdioTransport | None = None

    def start(self) -> dict:
        settings = self.app.settings
        transports: dict[str, dict | None] = {"tcp": None, "http": None}
        if self.tcp_port is not None:
            from iat.rpc.tcp import TcpTransport

            tcp = TcpTransport(self.dispatcher, self.executor, self.tcp_port, settings.max_message_bytes,
                               settings.peer_outbox_messages)
            tcp.start()
            self._servers.append(tcp)
            transports["tcp"] = {"host": "127.0.0.1", "port": tcp.port}
        if self.http_port is not None:
            from iat.rpc.http import HttpTransport

            http = HttpTransport(self.dispatcher, self.executor, self.http_port, settings.max_message_bytes,
                                 settings.allowed_origins)
            http.start()
            self._servers.append(http)
            transports["http"] = {"host": "127.0.0.1", "port": http.port, "url": f"http://127.0.0.1:{http.port}"}
        self.app.started_transports = {k: v for k, v in transports.items() if v}
        if self.stdio_in is not None:
            self.app.started_transports["stdio"] = {}
        ready = {**self.app.info(), **transports, "token": self.app.token}
        write_ready_file(settings.ready_file, ready)
        self.out.write(notification("sidecar.ready", ready))
        log.info("ready: pid %s, tcp %s, http %s", ready["pid"], transports["tcp"], transports["http"])
        return ready

    def run(self) -> int:
        """Serves until asked to stop; returns the exit code."""
        stop = self.app.shutdown_requested
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        watch_parent(stop.set)
        self.start()
        # Unfinished runs (a crash, a kill) go on; looked for shortly after start so the first answers come first.
        resume = threading.Timer(0.5, self._resume_runs)
        resume.daemon = True
        resume.start()
        if self.stdio_in is not None:
            stdio = self._stdio = StdioTransport(self.dispatcher, self.executor, self.out, self.stdio_in,
                                                 self.app.settings.max_message_bytes)

            def read() -> None:
                try:
                    stdio.run()
                finally:
                    log.info("stdin closed; shutting down")
                    stop.set()

            threading.Thread(target=read, name="iat-stdin", daemon=True).start()
        while not stop.wait(0.2):
            pass
        self.stop()
        return 0

    def _resume_runs(self) -> None:
        if self.app.stopping.is_set():
            return
        try:
            from iat.pipeline.service import resume_unfinished

            resume_unfinished(self.app)
        except Exception:  # noqa: BLE001 - the sidecar serves on; the runs wait for the next start
            log.exception("looking for unfinished runs failed")
        try:  # copilot instructions: queued ones run, running ones resume or fail with a reason
            self.app.agent.recover()
        except Exception:  # noqa: BLE001 - the sidecar serves on; the instructions wait for the next start
            log.exception("recovering agent instructions failed")
        from iat.pipeline import studio_watch

        studio_watch.start(self.app)  # runs of studio projects started on other workstations

    def stop(self) -> None:
        self.app.stopping.set()  # from here new messages are answered shutting_down
        # Calls admitted before the stop (queued or running) finish within the budget; peers stay connected
        # meanwhile, so they get those answers and shutting_down for anything new.
        drain = threading.Thread(target=self.executor.shutdown, kwargs={"wait": True}, daemon=True)
        drain.start()
        drain.join(STOP_BUDGET_S * 0.5)
        if drain.is_alive():
            log.warning("calls still running at shutdown are abandoned; what they committed is kept")
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.app.events.close(timeout=0.2)
        for server in self._servers:
            server.stop()
        if self._stdio is not None:
            self._stdio.close()
        self.app.close()
        remove_ready_file(self.app.settings.ready_file, os.getpid())
        log.info("stopped")
