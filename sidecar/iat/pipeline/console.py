"""Following a run from a terminal: a one-line progress bar fed by the run's events, then where every result is.
Used by `iat-sidecar run` and by the demo."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from iat.app import App


class Follower:
    """Counts a run's candidates and stages from its events and draws the bar; `done` fires with run.finished."""

    def __init__(self, app: App, candidates_total: int, stream: TextIO = sys.stderr):
        """Subscribe before the run starts (no event is missed); then `follow(run_id)`."""
        self.app = app
        self.run_id: str | None = None
        self._early: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self.total = candidates_total
        self.stream = stream
        self.candidates = 0
        self.last = ""
        self.finished: dict | None = None
        self.done = threading.Event()
        self._tty = stream.isatty()
        self._printed = -1  # without a terminal: one line per finished candidate, not per stage
        self._unsubscribe = app.events.subscribe(self._on_event)
        self._started = time.monotonic()

    def follow(self, run_id: str) -> None:
        with self._lock:
            self.run_id = run_id
            early, self._early = self._early, []
        for name, payload in early:
            self._on_event(name, payload)

    def _on_event(self, name: str, payload: dict) -> None:
        with self._lock:
            if self.run_id is None:
                self._early.append((name, payload))
                return
        if payload.get("run_id") != self.run_id:
            return
        if name == "candidate.finished":
            self.candidates += 1
        elif name == "run.progress" and "stage" in payload:
            self.last = f"{payload['job_key']} #{payload['candidate_index']} {payload['stage']}"
        elif name == "run.finished":
            self.finished = payload
        self._draw(final=name == "run.finished")
        if name == "run.finished":
            self.done.set()

    def _draw(self, final: bool = False) -> None:
        width = 30
        filled = int(width * self.candidates / max(1, self.total))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.candidates}/{self.total} candidates "
                f"{time.monotonic() - self._started:5.1f}s  {self.last}")
        if self._tty:
            self.stream.write("\r" + line[:118].ljust(118) + ("\n" if final else ""))
        elif final or self._printed != self.candidates:
            self._printed = self.candidates
            self.stream.write(line + "\n")
        self.stream.flush()

    def wait(self) -> dict | None:
        """The run.finished payload; None if the runner went idle without finishing the run (it was stopped)."""
        while not self.done.wait(0.5):
            if self.app.runner.idle.is_set() and not self.app.runner.has(self.run_id):
                self.done.wait(0.5)  # its last event may still be on the way
                break
        self._unsubscribe()
        return self.finished


def print_results(call, slug: str, run_id: str, finished: dict, out: TextIO = sys.stdout) -> None:
    """Per job: status, the chosen candidate and its file; then the contact sheet, the log and the results."""
    run = call("runs.get", slug=slug, run_id=run_id)
    print(f"\nrun {run_id}: {run['status']} ({', '.join(f'{n} {s}' for s, n in sorted(run['jobs'].items()))})",
          file=out)
    results = finished.get("results_dir")
    for job in call("jobs.list", slug=slug, run_id=run_id)["items"]:
        chosen = job["selected_candidate_index"]
        where = f"{results}/{job['job_key']}/final.png" if job["final_asset_id"] else "-"
        pick = f"candidate {chosen}" if chosen is not None else "no candidate passed the QA guard"
        print(f"  {job['job_key']:<14} {job['status']:<20} {pick:<14} {where}", file=out)
    print(f"\ncontact sheet: {results}/contact_sheet.html (and .png)", file=out)
    print(f"run log:       {results}/run.jsonl", file=out)
    print(f"every image:   {results}/<job>/c<candidate>-<step>.png, each with a .json sidecar", file=out)


def local_caller(app: App):
    """call(method, **params) through the same dispatcher and validation the transports use."""
    from iat.context import Session
    from iat.rpc.protocol import Dispatcher

    dispatcher = Dispatcher(app)
    session = Session("console", authenticated=True)
    return lambda method, **params: dispatcher.call(method, params, session)


def start_and_follow(app: App, call, params: dict) -> int:
    """runs.start with `params`, the progress bar until it ends, then where everything is; the exit code."""
    follower = Follower(app, 0)  # subscribed before the start: no event is missed
    run = call("runs.start", **params)
    snapshot = run["settings_snapshot_json"]
    follower.total = len(snapshot["jobs"]) * snapshot["candidates"]
    follower.follow(run["id"])
    finished = follower.wait()
    if finished is None:
        print("the run stopped before it finished; it resumes on the next start", file=sys.stderr)
        return 1
    print_results(call, params["slug"], run["id"], finished)
    return 0 if finished["status"] == "done" else 1


def run_from_cli(args, settings) -> int:
    """`iat-sidecar run`: the shot list through runs.start in this process, followed to its end."""
    from pathlib import Path

    from iat.errors import IATError

    try:
        shots_csv = Path(args.shots).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read the shot list {args.shots}: {exc}", file=sys.stderr)
        return 2
    app = App(settings)
    params = {"slug": args.project, "shots_csv": shots_csv, "candidates": args.candidates, "provider": args.provider,
              "color_correct": not args.no_color_correct}
    for key, value in (("stages", args.stages.split(",") if args.stages else None), ("seed", args.seed),
                       ("style_guide_id", args.style_guide), ("upscale_factor", args.upscale)):
        if value is not None:
            params[key] = value
    try:
        print(f"running {args.shots} in {settings.home / 'projects' / args.project}", file=sys.stderr)
        return start_and_follow(app, local_caller(app), params)
    except IATError as exc:
        print(f"{exc.name}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        app.close()
