#!/usr/bin/env python3
"""Records what the viewer sees of one real run, for viewer.test.js: the sidecar's answers (runs.start, runs.list,
runs.get, jobs.list, candidates.list, runs.outputs) and every notification of the run, in order, as the shell
forwards them ({method, params, at, seq}).

    .venv/bin/python src-tauri/ui-tests/capture_run.py src-tauri/ui-tests/fixtures/run.json

The run is small (the demo's two characters, two shots of two candidates through three stages, one a cut-out) and
in process on a throwaway home; run this again after a change to the runner's events or the commands' answers.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path

from iat.app import App
from iat.context import Session
from iat.demo import CHARACTERS, SHOTS, STYLE
from iat.rpc.protocol import Dispatcher
from iat.settings import Settings

SLUG = "viewer-fixture"


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "fixtures" / "run.json"
    with tempfile.TemporaryDirectory(prefix="iat-viewer-fixture-") as home:
        app = App(Settings.from_env({}, home=Path(home)))
        dispatcher = Dispatcher(app)
        session = Session("capture", authenticated=True)

        def call(method: str, **params):
            return dispatcher.call(method, params, session)

        notes: list[dict] = []
        lock = threading.Lock()

        def record(name: str, payload: dict) -> None:
            if name.startswith(("run.", "candidate.", "job.")):
                with lock:
                    notes.append({"method": name, "params": payload})

        try:
            call("projects.create", slug=SLUG, name="Viewer fixture")
            call("style_guides.create", slug=SLUG, **STYLE)
            for character in CHARACTERS:
                call("characters.create", slug=SLUG, **character)
            app.events.subscribe(record)
            shots = [SHOTS[1], SHOTS[4]]
            started = call("runs.start", slug=SLUG, shots=shots, candidates=2, seed=7)
            run_id = started["id"]
            if not app.runner.wait_idle(240):
                raise SystemExit("the run did not finish")
            app.events.drain()
            answers = {
                "runs.start": started,
                "runs.list": call("runs.list", slug=SLUG),
                "runs.get": call("runs.get", slug=SLUG, run_id=run_id),
                "jobs.list": call("jobs.list", slug=SLUG, run_id=run_id),
                "candidates.list": call("candidates.list", slug=SLUG, run_id=run_id),
                "runs.outputs": call("runs.outputs", slug=SLUG, run_id=run_id),
            }
        finally:
            app.close()
    # The shell's stamps: when it happened and its order (the capture's clock is not the shell's; order is).
    base = 1_700_000_000_000
    notes = [{**n, "at": base + i * 10, "seq": i + 1} for i, n in enumerate(notes)]
    fixture = {"slug": SLUG, "run_id": run_id, "answers": answers, "notifications": notes}
    text = json.dumps(fixture, indent=1, sort_keys=True).replace(home, "/home/capture")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}: {len(notes)} notifications, {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
