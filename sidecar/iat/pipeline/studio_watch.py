"""A sidecar with studio projects looks every few seconds (IAT_STUDIO_POLL_SECONDS) for their active runs and hands
them to its runner, so a run started on one workstation is worked on by every sidecar that has the project
attached, without a restart; the job claims (iat.pipeline.claims) share the work out. A run this runner already
has, or whose jobs left are all held by others, costs a couple of reads."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from iat.errors import IATError
from iat.pipeline import repo

if TYPE_CHECKING:
    from iat.app import App

log = logging.getLogger(__name__)


def submit_studio_runs(app: App) -> list[str]:
    """Submits the active runs of this sidecar's postgres-backed projects; returns their ids."""
    submitted = []
    for entry in app.projects.list("active"):
        if entry.get("backend") != "postgres":
            continue
        try:
            handle = app.projects.open(entry["slug"])
            runs = handle.store.read(repo.active_runs, handle.id)
        except IATError as exc:  # the server unreachable for a moment, the project going away
            log.debug("studio runs of %s: %s", entry["slug"], exc.message)
            continue
        for run in runs:
            if not app.runner.has(run["id"]):
                app.runner.submit(entry["slug"], run["id"])
                submitted.append(run["id"])
    return submitted


def start(app: App) -> threading.Thread | None:
    """The watcher thread, when a studio database is configured; it ends when the app stops."""
    if not app.settings.studio_database_url:
        return None

    def watch() -> None:
        while not app.stopping.wait(app.settings.studio_poll_seconds):
            try:
                submit_studio_runs(app)
            except Exception:  # noqa: BLE001 - the next look tries again
                log.exception("looking for studio runs failed")

    thread = threading.Thread(target=watch, name="iat-studio-runs", daemon=True)
    thread.start()
    return thread
