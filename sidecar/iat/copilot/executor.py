"""The agent that carries out instructions, and its queue (SPEC 2.6, 9.2).

`Agent(app)` (`app.agent`) works on a few threads of its own (WORKERS), apart from the request workers and the
runner:

- `kick(slug)`: the project has queued instructions. One drain per project at a time takes them in order
  (`repo.queued_in_order`: the lowest priority number first, then the oldest) and moves each queued -> running
  with its dispatch row (agent, worker_id, state_json) in one write guarded in SQL, so when two sidecars race for
  an instruction one wins and the other gets illegal_transition and skips it. Projects drain side by side.
- Which agent: the project's `settings_json.copilot.agent`, "builtin" (the default) or "external" (an external
  agent API, iat.copilot.external: the drain POSTs the envelope and goes on; the agent's callbacks end it).
- The built-in agent: every step is a registry command through `actions.call` (the validation, audit rows, events
  and typed errors any client gets), logged as a `log` event before ({step, method, params}) and after ({step,
  ok, result}). It ends with a `result` event and done, or with an `error` event ({code, name, message, details}
  of the typed error) and failed. Cancellation is looked at between steps and while a run is followed.
- `cancel(slug, id)`: work in flight here stops at its next step; a pipeline_run's own run is canceled
  (runs.cancel), also when nobody here follows it (its run id is in the dispatch row). A qa_check waiting on a run
  only stops waiting: that run is not its own.
- `recover()` (after start, off the request path): queued instructions are kicked; running ones whose worker was a
  process of this host that is gone: a built-in pipeline_run or qa_check with its run id in state_json follows
  that run again (the runner resumes the run itself), an external one stays running and waits for the agent's
  callbacks, any other built-in one fails "interrupted by a restart". A worker on another host (a studio
  project) is left alone: it may still be working.

Following a run: subscribed to `run.finished`, with runs.get polled every POLL_S as a fallback (and the
instruction's own row read, so a cancel made by another process is seen).

delete_project: the instruction's rows live in the project's database, which goes with the project. So the
order is: a `log` event "deleting the project", then projects.delete; when it fails, the instruction fails as any
other (its rows are still there); when it succeeds, the end (`result` event, running -> done) is published from
memory as `agent.instruction.event` / `agent.instruction.status`, never written, and the app audit row that
projects.delete writes is the lasting trail. A `done` is thus never recorded for a project that still exists.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any, Callable

from iat.clock import utcnow
from iat.copilot import actions, repo, service
from iat.errors import Conflict, IATError, IllegalTransition, InternalError, InvalidParams, NotFound

log = logging.getLogger(__name__)

WORKERS = 2
POLL_S = 2.0  # a followed run: runs.get this often when no run.finished came
ACTIVE_RUN = ("planned", "running")
AGENTS = ("builtin", "external")
INTERRUPTED = "interrupted by a restart"
RESUMABLE = ("pipeline_run", "qa_check")


class _Ended(Exception):
    """The instruction ended under the agent (canceled, or moved by another process): write nothing more."""


class _Interrupted(Exception):
    """The agent is closing: leave the instruction running, for recover() at the next start."""


class _Work:
    """An instruction being worked on here: what a cancel reaches."""

    def __init__(self, slug: str, instruction_id: str):
        self.slug = slug
        self.instruction_id = instruction_id
        self.cancel = threading.Event()
        self.wake = threading.Event()  # a followed run ended, a cancel came, or the agent is closing


def error_of(exc: IATError) -> dict:
    """An `error` event's payload: the typed error as {code, name, message, details}."""
    return {"code": exc.code, "name": exc.name, "message": exc.message, "details": dict(exc.details)}


def shrink(value: Any, depth: int = 0) -> Any:
    """A log-sized copy: strings cut, long lists shown by their first items and count, deep nesting summarised."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    if isinstance(value, dict):
        if depth >= 3:
            return {"keys": len(value)}
        return {str(k): shrink(v, depth + 1) for k, v in list(value.items())[:40]}
    if isinstance(value, (list, tuple)):
        if depth >= 3:
            return {"count": len(value)}
        items = [shrink(v, depth + 1) for v in value[:10]]
        return items if len(value) <= 10 else {"first": items, "count": len(value)}
    return value


def worker_gone(worker: str) -> bool:
    """A dispatch row's worker (host/pid/random) that was a process of this host and is gone."""
    from iat.lifecycle import pid_alive
    from iat.pipeline.claims import HOST

    host, _, rest = (worker or "").partition("/")
    pid_text = rest.partition("/")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    return pid_alive(int(pid_text)) is False


class Agent:
    def __init__(self, app, workers: int = WORKERS):
        from iat.pipeline.claims import new_worker_id

        self.app = app
        self.worker_id = new_worker_id()  # names this agent in the dispatch rows it writes
        self._workers = workers
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # drains scheduled or running
        self._draining: set[str] = set()
        self._again: set[str] = set()  # kicked while draining: look at the queue once more
        self._resume: dict[str, list[tuple[dict, dict]]] = {}  # slug -> (instruction, dispatch row) to follow again
        self._work: dict[str, _Work] = {}
        self._closed = False

    # --- the public side ---

    def kick(self, slug: str) -> None:
        """The project has queued instructions: work on them (one drain per project at a time)."""
        with self._lock:
            if self._closed:
                return
            if slug in self._draining:
                self._again.add(slug)
                return
            self._draining.add(slug)
            self._busy += 1
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._serve, name=f"iat-agent-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._tasks.put(lambda: self._drain(slug))

    def cancel(self, slug: str, instruction_id: str) -> None:
        """The instruction was canceled: work in flight here stops at its next step; a pipeline_run's own run is
        canceled even when nobody here follows it."""
        with self._lock:
            work = self._work.get(str(instruction_id))
        if work is not None:
            work.cancel.set()
            work.wake.set()
            return
        try:
            handle = self.app.projects.open(slug)
            row, dispatch = handle.store.read(
                lambda pid: (repo.get_instruction(pid, instruction_id), repo.get_dispatch(instruction_id)), handle.id)
        except IATError:
            return
        run_id = ((dispatch or {}).get("state_json") or {}).get("run_id")
        if row["instruction_type"] == "pipeline_run" and run_id and (dispatch or {}).get("agent") == "builtin":
            self._cancel_run(slug, run_id)

    def recover(self) -> None:
        """After start: queued instructions are kicked; running ones left by a process of this host that is gone
        are followed again, left to their external agent, or failed with INTERRUPTED."""
        try:
            entries = self.app.projects.list(None)
        except IATError:
            log.exception("looking for instructions to recover failed")
            return
        for entry in entries:
            if self._closed:
                return
            try:
                self._recover(entry["slug"])
            except Exception:  # noqa: BLE001 - one project's trouble must not keep the others waiting
                log.exception("recovering the instructions of %s failed", entry["slug"])

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no drain is scheduled or running (instructions waiting for an external agent's callbacks do not
        count); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def close(self, timeout: float = 1.0) -> None:
        """Takes no more work; runs being followed are let go (the instructions stay running, for recover())."""
        with self._lock:
            self._closed = True
            works = list(self._work.values())
            threads = list(self._threads)
        for work in works:
            work.wake.set()
        for _ in threads:
            self._tasks.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def closed(self) -> bool:
        return self._closed

    # --- threads and drains ---

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            task()

    def _drain(self, slug: str) -> None:
        try:
            while True:
                while not self._closed:
                    job = self._next(slug)
                    if job is None:
                        break
                    job.run()
                with self._lock:
                    if slug in self._again and not self._closed:
                        self._again.discard(slug)
                        continue
                    self._draining.discard(slug)
                    self._again.discard(slug)
                    return
        except Exception:  # noqa: BLE001 - a bug must not leave the project marked draining forever
            log.exception("the agent's drain of %s stopped with an unexpected error", slug)
            with self._lock:
                self._draining.discard(slug)
                self._again.discard(slug)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _next(self, slug: str) -> _Job | None:
        """The next instruction of the project to work on: one to follow again (recover), else the first queued
        one this agent wins; None when there is none."""
        try:
            handle = self.app.projects.open(slug)
        except IATError:  # the project is gone
            return None
        with self._lock:
            resume = self._resume.get(slug)
            if resume:
                row, dispatch = resume.pop(0)
                return _Job(self, handle, row, dispatch, self._register(slug, str(row["id"])))
        while True:
            rows = handle.store.read(repo.queued_in_order, handle.id, 10)
            if not rows:
                return None
            kind = self._agent_kind(handle)
            for row in rows:
                iid = str(row["id"])
                with self._lock:
                    work = self._register(slug, iid)
                dispatch = {"agent": kind if kind in AGENTS else "builtin", "worker_id": self.worker_id,
                            "state_json": {}}
                try:
                    row = service.advance(self.app, handle, iid, "running", dispatch=dispatch)
                except (IllegalTransition, NotFound):  # another sidecar took it, or it was canceled meanwhile
                    self._unregister(iid)
                    continue
                job = _Job(self, handle, row, dispatch, work)
                if kind not in AGENTS:
                    job.unknown_agent = kind
                return job

    def _agent_kind(self, handle) -> str:
        from iat.projects.repo import get_project

        settings = handle.store.read(get_project, handle.id)["settings_json"] or {}
        return str((settings.get("copilot") or {}).get("agent") or "builtin")

    def _register(self, slug: str, instruction_id: str) -> _Work:
        """Under self._lock."""
        work = self._work[instruction_id] = _Work(slug, instruction_id)
        return work

    def _unregister(self, instruction_id: str) -> None:
        with self._lock:
            self._work.pop(instruction_id, None)

    def _cancel_run(self, slug: str, run_id: str) -> None:
        try:
            actions.call(self.app, "runs.cancel", slug=slug, run_id=run_id)
        except Conflict:  # it had ended
            pass
        except IATError as exc:
            log.warning("canceling run %s of %s for a canceled instruction failed: %s", run_id, slug, exc.message)

    # --- recovery ---

    def _recover(self, slug: str) -> None:
        handle = self.app.projects.open(slug)

        def read(pid: str):
            running = repo.with_status(pid, "running")
            return (bool(repo.queued_in_order(pid, 1)),
                    [(row, repo.get_dispatch(str(row["id"]))) for row in running])

        queued, running = handle.store.read(read, handle.id)
        resume = []
        for row, dispatch in running:
            iid = str(row["id"])
            if dispatch is not None:
                if dispatch["worker_id"] == self.worker_id or not worker_gone(dispatch["worker_id"]):
                    continue  # ours, or a live process's (or another host's: it may still be working)
                if not handle.store.write(_take_over, iid, dispatch["worker_id"], self.worker_id):
                    continue  # another sidecar took it over first
                dispatch = {**dispatch, "worker_id": self.worker_id}
            try:
                if dispatch is not None and dispatch["agent"] == "external":
                    service.log(self.app, handle, iid, "log", {
                        "step": "recovered", "message": "sidecar restarted; waiting for the agent's callbacks"})
                elif (dispatch is not None and row["instruction_type"] in RESUMABLE
                      and (dispatch["state_json"] or {}).get("run_id")):
                    resume.append((row, dispatch))
                else:
                    err = Conflict(f"the instruction was {INTERRUPTED} before it ended; create it again to retry",
                                   details={"instruction_id": iid, "reason": "interrupted_by_restart"})
                    service.advance(self.app, handle, iid, "failed", reason=INTERRUPTED, error=error_of(err))
            except IllegalTransition:  # it ended meanwhile
                continue
        if resume:
            with self._lock:
                self._resume.setdefault(slug, []).extend(resume)
        if queued or resume:
            self.kick(slug)


def _take_over(instruction_id: str, old_worker: str, new_worker: str) -> bool:
    """Inside a write: the dispatch row names this agent, only while it still names the gone worker."""
    from iat.db.models import AgentDispatch

    return bool(AgentDispatch.update(worker_id=new_worker, updated_at=utcnow())
                .where(AgentDispatch.instruction_id == instruction_id, AgentDispatch.worker_id == old_worker)
                .execute())


class _Job:
    """One instruction being worked on by this agent."""

    def __init__(self, agent: Agent, handle, row: dict, dispatch: dict, work: _Work):
        self.agent = agent
        self.app = agent.app
        self.handle = handle
        self.row = row
        self.id = str(row["id"])
        self.slug = handle.slug
        self.payload = row["payload_json"]
        self.kind = dispatch.get("agent", "builtin")
        self.state: dict = dict(dispatch.get("state_json") or {})
        self.work = work
        self.unknown_agent: str | None = None

    def run(self) -> None:
        try:
            if self.unknown_agent is not None:
                self.fail(InvalidParams(f"the project's settings_json.copilot.agent is {self.unknown_agent!r}; "
                                        f"it must be one of {', '.join(AGENTS)}",
                                        details={"agent": self.unknown_agent, "allowed": list(AGENTS)}))
            elif self.kind == "external":
                from iat.copilot import external

                external.dispatch(self)
            else:
                self._builtin()
        except _Ended:
            pass
        except _Interrupted:
            log.info("instruction %s left running: the agent is closing", self.id)
        except IATError as exc:
            self.fail(exc)
        except Exception as exc:  # noqa: BLE001 - a bug fails the instruction, it does not vanish
            log.exception("instruction %s failed with an unexpected error", self.id)
            self.fail(InternalError(f"the agent failed unexpectedly ({type(exc).__name__})"))
        finally:
            self.agent._unregister(self.id)

    def _builtin(self) -> None:
        from iat.copilot import builtin

        result = builtin.HANDLERS[self.row["instruction_type"]](self)
        if result is not None:
            self.finish(result)

    # --- what steps use ---

    def check(self) -> None:
        if self.work.cancel.is_set():
            raise _Ended()
        if self.agent.closed:
            raise _Interrupted()

    def save(self, **changes) -> dict:
        """The dispatch row's new state_json (kept whole: each write carries all of it)."""
        self.state = {**self.state, **changes}
        return {"state_json": self.state}

    def log(self, payload: dict, *, state: dict | None = None, dispatch: dict | None = None) -> None:
        """A `log` event, with state_json keys (`state`) or other dispatch row fields written in its transaction."""
        fields = {**(dispatch or {}), **(self.save(**state) if state else {})}
        try:
            service.log(self.app, self.handle, self.id, "log", payload, dispatch=fields or None)
        except (IllegalTransition, NotFound):  # canceled (or gone) under us
            self.work.cancel.set()
            raise _Ended() from None

    def call(self, step: str, method: str, *, keep: Callable[[Any], dict] | None = None, **params) -> Any:
        """One registry command as a logged step; `keep(result)` gives state_json keys written with the log
        event that follows it."""
        self.check()
        self.log({"step": step, "method": method, "params": shrink({k: v for k, v in params.items()
                                                                      if k != "slug"})})
        try:
            out = actions.call(self.app, method, **params)
        except IATError as exc:
            self.log({"step": step, "ok": False, "error": {"name": exc.name, "message": exc.message}})
            raise
        self.log({"step": step, "ok": True, "result": shrink(out)}, state=keep(out) if keep else None)
        return out

    def finish(self, result: dict) -> None:
        try:
            service.advance(self.app, self.handle, self.id, "done", result=result)
        except (IllegalTransition, NotFound):
            pass

    def fail(self, exc: IATError) -> None:
        try:
            service.advance(self.app, self.handle, self.id, "failed", reason=exc.message[:500],
                            error=error_of(exc))
        except (IllegalTransition, NotFound):
            pass

    def follow(self, run_id: str, *, own: bool) -> dict:
        """Waits for the run to end and returns it (runs.get). A cancel stops the wait, and cancels the run when it
        is the instruction's own; a closing agent leaves it (recover() follows it again after a restart)."""
        work = self.work

        def on_event(name: str, payload: dict) -> None:
            if name == "run.finished" and payload.get("run_id") == run_id:
                work.wake.set()

        unsubscribe = self.app.events.subscribe(on_event)
        try:
            while True:
                work.wake.clear()
                if work.cancel.is_set():
                    if own:
                        self.agent._cancel_run(self.slug, run_id)
                    raise _Ended()
                if self.agent.closed:
                    raise _Interrupted()
                run = actions.call(self.app, "runs.get", slug=self.slug, run_id=run_id)
                if run["status"] not in ACTIVE_RUN:
                    return run
                status = self.handle.store.read(lambda pid: repo.get_instruction(pid, self.id)["status"],
                                                self.handle.id)
                if status != "running":  # canceled by another process
                    work.cancel.set()
                    continue
                work.wake.wait(POLL_S)
        finally:
            unsubscribe()

    def publish_end(self, result: dict) -> None:
        """The end of an instruction whose rows are gone (its project was deleted), published from memory."""
        base = {"project_id": self.handle.id, "slug": self.slug, "instruction_id": self.id}
        for event_type, payload in (("result", result), ("status_change", {"from": "running", "to": "done"})):
            self.app.events.publish("agent.instruction.event", {**base, "event_id": str(uuid.uuid4()),
                                                                "event_type": event_type, "payload": payload,
                                                                "persisted": False})
        self.app.events.publish("agent.instruction.status", {**base, "from": "running", "status": "done",
                                                             "reason": "the project was deleted with its "
                                                                       "instructions"})
