"""The runner: works through queued runs on its own threads, apart from the request workers.

One run at a time per App (its jobs in shot-list order), the candidates of a job in parallel on a small pool.
The database rows are the queue (see iat.pipeline.repo): `runs.start` writes a planned run and hands its id
here; at start-up every project's unfinished runs are queued again, so a run interrupted at any point (even by
SIGKILL) finishes on the next start with every job done once:

- a candidate's files are stored, then its asset rows, links, candidate row, QA report and audit row are
  written in one transaction, then its event is published; a candidate without a row is redone from its seed
  (same bytes), and files of a candidate that died before its commit are swept as orphans on resume;
- a job is finished (ranked, its best candidate chosen) in one transaction once all its candidates are;
- a file lock per run (runs/<run_id>/.lock) keeps two processes on one app home (the desktop app and
  `iat-sidecar run`) from working on the same run.

`runs.cancel` sets the run's cancel event, which every stage checks: the jobs left are marked failed (canceled)
and the run ends partial or failed. A sidecar that stops leaves its run `running`, to be resumed (stopping sets
the cancel events too, so calls waiting on a provider give up at once; their candidates are redone).

Every provider call goes through the App's ledger (attempts, retries, cost, budget). When the project's budget
cannot pay for the next call, the run stops cleanly: the candidates in flight finish, the jobs left end failed
(stopped: budget), and the run ends partial or failed.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from iat.assets import repo as assets_repo
from iat.assets import store as files
from iat.assets.register import write_with_files
from iat.audit import repo as audit
from iat.cancel import Cancelled
from iat.clock import utcnow
from iat.errors import BudgetExhausted, IATError
from iat.pipeline import ranking, repo
from iat.knowledge.rules import parse_rules
from iat.pipeline.candidate import CandidateWork, Tools, run_candidate
from iat.pipeline.post import mark_near_duplicates
from iat.pipeline.runlog import RunLog

if TYPE_CHECKING:
    from iat.app import App
    from iat.projects.directory import ProjectHandle

log = logging.getLogger(__name__)

RUNS_DIR = "runs"


class _Stopped(Exception):
    """The run was cancelled or the sidecar is stopping: leave the rest of the run."""


class Runner:
    def __init__(self, app: App, threads: int = 2):
        self.app = app
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="iat-candidate")
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # run id -> project slug, for the runs queued or running here
        self._cancel: dict[str, threading.Event] = {}
        self._abandon: set[str] = set()  # canceled because their project is going away: no contact sheet
        self._active: str | None = None  # the run being worked on (the others wait in the queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.idle = threading.Event()
        self.idle.set()

    # --- the queue ---

    def submit(self, slug: str, run_id: str) -> None:
        with self._lock:
            if run_id in self._pending or self._stop.is_set():
                return
            self._pending[run_id] = slug
            self._cancel[run_id] = threading.Event()
            self.idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="iat-runner", daemon=True)
                self._thread.start()
        self._queue.put((slug, run_id))

    def cancel(self, run_id: str) -> bool:
        """Asks a run queued or running here to stop; False when this runner does not have it."""
        with self._lock:
            event = self._cancel.get(run_id)
        if event is None:
            return False
        event.set()
        return True

    def abandoned(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._abandon

    def has(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._pending

    def cancel_project(self, slug: str, timeout: float = 10.0) -> None:
        """Before a deletion: drops the project's queued runs (they stay planned in its database) and stops its
        active one, waiting (bounded) until it lets go of the project; it stops at its next step."""
        with self._lock:
            runs = [run_id for run_id, s in self._pending.items() if s == slug]
            self._abandon.update(runs)
            queued = [run_id for run_id in runs if run_id != self._active]
        for run_id in runs:
            self.cancel(run_id)
        for run_id in queued:
            self._forget(run_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not any(s == slug for s in self._pending.values()):
                    return
            time.sleep(0.02)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.idle.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Stops taking work; the run in progress stops at its next step and stays `running` (resumed later)."""
        self._stop.set()
        with self._lock:
            events = list(self._cancel.values())
        for event in events:  # provider calls in flight or backing off stop waiting
            event.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            slug, run_id = item
            with self._lock:
                if run_id not in self._pending:  # dropped from the queue while it waited (its project went)
                    continue
                self._active = run_id
            try:
                self._process(slug, run_id)
            except IATError as exc:  # its project was closed or deleted under it, say
                log.warning("run %s of %s stopped: %s", run_id, slug, exc.message)
            except Exception:  # noqa: BLE001 - one broken run must not stop the runner
                log.exception("run %s of %s stopped with an unexpected error", run_id, slug)
            finally:
                self._forget(run_id)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._pending.pop(run_id, None)
            self._cancel.pop(run_id, None)
            self._abandon.discard(run_id)
            if self._active == run_id:
                self._active = None
            if not self._pending:
                self.idle.set()

    # --- one run ---

    def _process(self, slug: str, run_id: str) -> None:
        with self.app.projects.lease(slug) as handle:  # a project gone meanwhile: an IATError, logged by _loop
            run_dir = handle.root / RUNS_DIR / run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(str(run_dir / ".lock"), timeout=0):
                    _RunWork(self, handle, run_id, run_dir).run()
            except Timeout:
                log.info("run %s is being worked on by another process; leaving it", run_id)


class _RunWork:
    """Everything about one run while the runner works on it."""

    def __init__(self, runner: Runner, handle: ProjectHandle, run_id: str, run_dir: Path):
        self.runner = runner
        self.app = runner.app
        self.handle = handle
        self.run_id = run_id
        self.run_dir = run_dir
        self.cancel = runner._cancel.get(run_id) or threading.Event()
        self.budget_spent = threading.Event()  # the budget refused a call: no new work, the run ends
        self.log = RunLog(run_dir / "run.jsonl", self.app.redactor.scrub)

    # -- helpers --

    def read(self, fn, *args):
        return self.handle.store.read(fn, *args)

    def write(self, fn, *args):
        return self.handle.store.write(fn, *args)

    def publish(self, name: str, **payload) -> None:
        self.app.events.publish(name, {"project_id": self.handle.id, "slug": self.handle.slug,
                                       "run_id": self.run_id, **payload})

    def check(self) -> None:
        if self.cancel.is_set() or self.runner._stop.is_set() or self.budget_spent.is_set():
            raise _Stopped()

    # -- the run --

    def run(self) -> None:
        run = self.read(repo.get_run, self.handle.id, self.run_id)
        if run["status"] not in repo.ACTIVE_RUN or run["run_mode"] != "run":
            return
        snapshot = run["settings_snapshot_json"]
        self.qa_duplicate_distance = parse_rules(snapshot["style_guide"]["rules_json"]).qa.duplicate_max_distance
        order = {job["job_key"]: i for i, job in enumerate(snapshot["jobs"])}
        jobs = sorted(self.read(repo.list_jobs, self.run_id), key=lambda j: order[j["job_key"]])
        resumed = run["status"] == "running"
        if resumed:
            removed = self._sweep()
            self.log.write("resumed", run_id=self.run_id, orphans_removed=len(removed))
        else:
            self.log.write("started", run_id=self.run_id, provider=snapshot["provider"], jobs=len(jobs),
                           candidates=snapshot["candidates"], stages=snapshot["stages"])
        self.write(repo.update_run, self.handle.id, self.run_id,
                   {"status": "running", "started_at": run["started_at"] or utcnow()},
                   "run.resumed" if resumed else "run.started")
        self.publish("run.started", resumed=resumed, jobs_total=len(jobs))
        try:
            tools = self._tools(snapshot)
        except IATError as exc:  # the provider is gone, disabled, lacks its key, or its key cannot be read
            self.log.write("provider_unusable", error={"name": exc.name, "message": exc.message})
            self._cancel_rest({"error": {"name": exc.name, "message": exc.message}})
            self._finish(snapshot, products=False)
            return
        by_key = {job["job_key"]: job for job in snapshot["jobs"]}
        done_jobs = sum(1 for j in jobs if j["status"] in repo.FINISHED_JOB)
        try:
            for job in jobs:
                if job["status"] in repo.FINISHED_JOB:
                    continue
                self.check()
                self._job(snapshot, job, by_key[job["job_key"]], tools)
                done_jobs += 1
                self.publish("run.progress", jobs_done=done_jobs, jobs_total=len(jobs))
        except _Stopped:
            if self.runner._stop.is_set():
                self.log.write("interrupted", reason="the sidecar is stopping")
                return  # stays running: resumed on the next start
            if self.budget_spent.is_set() and not self.cancel.is_set():
                self._cancel_rest({"stopped": "budget"})
                self._finish(snapshot, stopped="budget")
                return
            self._cancel_rest()
            if self.runner.abandoned(self.run_id):  # its project is being deleted: let go of it at once
                self._finish(snapshot, products=False)
                return
        self._finish(snapshot)

    def _tools(self, snapshot: dict) -> Tools:
        """The run's provider, called through the ledger with the project's account (its current endpoint and
        secrets; the model the snapshot names)."""
        from iat.errors import Conflict
        from iat.providers import accounts

        code = snapshot["provider"]
        provider = accounts.provider_of(self.app, code)
        account = accounts.account(self.app, self.handle, code, model=snapshot.get("provider_config", {}).get(
            "model"))
        status = provider.status(account)
        if not status.ready:
            raise Conflict(status.reason or f"provider {code} is not ready", details={"provider_code": code})
        enforce_budget = not snapshot.get("budget_confirmed", False)

        def generate(request, cancel):
            return self.app.ledger.call(
                self.handle, account, "generate",
                lambda attempt: provider.generate(request, account, cancel=attempt.cancel, timeout=attempt.timeout),
                run_id=self.run_id, cancel=cancel, estimate_usd=provider.estimate(request, account).cost_usd,
                enforce_budget=enforce_budget, meta={"stage": request.stage})

        from iat.engines.base import EngineContext

        return Tools(provider_code=code, generate=generate, engines=self.app.engines,
                     engine_ctx=EngineContext(self.app, self.handle, self.run_id, enforce_budget))

    def _sweep(self) -> list[str]:
        """Files a crashed candidate stored before its commit: nothing references them, so they go."""
        shutil.rmtree(self.run_dir / "work", ignore_errors=True)

        def sweep() -> list[str]:
            return files.sweep_orphans(self.handle.root, assets_repo.referenced_uris(self.handle.id))

        return self.write(sweep)

    # -- one job --

    def _job(self, snapshot: dict, job_row: dict, job: dict, tools: Tools) -> None:
        k = snapshot["candidates"]
        existing = {c["candidate_index"] for c in self.read(repo.list_candidates, [job_row["id"]])}
        if job_row["status"] == "planned":
            self.write(repo.update_job, job_row["id"], {"status": "running"})
        pending = [i for i in range(k) if i not in existing]
        futures = {self.runner._pool.submit(self._candidate, snapshot, job_row, job, i, tools): i for i in pending}
        stopped = False
        for future in as_completed(futures):
            try:
                future.result()
            except _Stopped:
                stopped = True
        if stopped:
            raise _Stopped()
        self._finish_job(job_row, job)

    def _candidate(self, snapshot: dict, job_row: dict, job: dict, index: int, tools: Tools) -> None:
        self.check()
        workdir = self.run_dir / "work" / f"{job['job_key']}-{index}"
        workdir.mkdir(parents=True, exist_ok=True)

        def progress(step: str) -> None:
            self.check()
            self.publish("run.progress", job_key=job["job_key"], candidate_index=index, stage=step)

        try:
            work = run_candidate(snapshot, job, index, tools, workdir, cancel=self.cancel, progress=progress)
        except (_Stopped, Cancelled):
            raise _Stopped() from None
        except BudgetExhausted as exc:  # nothing was sent; the run ends here, the candidates in flight finish
            first = not self.budget_spent.is_set()
            self.budget_spent.set()
            if first:
                self.log.write("budget_exhausted", **exc.details)
            self._record_failure(job_row, job, index, exc.to_object()["data"] | {"message": exc.message})
            raise _Stopped() from None
        except IATError as exc:  # the provider or an engine refused: a failed candidate, recorded once
            self._record_failure(job_row, job, index, exc.to_object()["data"] | {"message": exc.message})
            return
        except Exception as exc:  # noqa: BLE001 - a bug in one candidate must not stop the run
            log.exception("candidate %s of job %s failed", index, job["job_key"])
            self._record_failure(job_row, job, index, {"name": "internal_error", "message": type(exc).__name__})
            return
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._record(job_row, job, work)

    def _record(self, job_row: dict, job: dict, work: CandidateWork) -> None:
        staged = [files.stage_bytes(self.handle.root, out.data) for out in work.outputs]
        project_id = self.handle.id
        hard, soft = work.qa["hard_failures"], work.qa["soft_warnings"]
        status = "failed_output_guard" if hard else "done"

        def commit() -> dict:
            now = utcnow()
            where = {"run_id": self.run_id, "job_id": job_row["id"], "job_key": job["job_key"],
                     "candidate_index": work.index}
            rows = assets_repo.insert_derived(project_id, [
                (out.kind, file.stored, {**where, "step": out.step, **out.meta}, out.parent, out.link)
                for out, file in zip(work.outputs, staged)], now, "run.candidate_recorded", where)
            # `assets`: the chain of steps (each derived_from the one before); `masks`: each cut-out's mask beside it.
            made = list(zip(work.outputs, rows))
            meta = {**work.meta, "assets": [{"step": o.step, "asset_id": r["id"]} for o, r in made
                                            if o.link == "derived_from"],
                    "quality_score": work.qa["quality_score"]}
            masks = [{"step": o.step, "asset_id": r["id"], "mask_for": rows[o.parent]["id"]} for o, r in made
                     if o.link == "mask_for"]
            if masks:
                meta["masks"] = masks
            return repo.insert_candidate(project_id, self.run_id, job_row["id"], {
                "candidate_index": work.index, "status": status, "output_asset_id": rows[work.output_index]["id"],
                "final_asset_id": rows[work.final_index]["id"], "rank_hard_failures": hard,
                "rank_soft_warnings": soft, "rank_avg_chroma_exceed": work.qa["avg_chroma_exceed"],
                "meta_json": meta}, {**work.qa, "asset_id": rows[work.final_index]["id"]}, now)

        row = write_with_files(self.handle, staged, commit)
        self.log.write("candidate", job_key=job["job_key"], candidate_index=work.index, seed=work.seed,
                       status=status, hard_failures=hard, soft_warnings=soft, candidate_id=row["id"],
                       final_asset_id=row["final_asset_id"])
        self.publish("candidate.finished", job_key=job["job_key"], candidate_index=work.index, status=status)

    def _record_failure(self, job_row: dict, job: dict, index: int, error: dict) -> None:
        def commit() -> dict:
            return repo.insert_candidate(self.handle.id, self.run_id, job_row["id"], {
                "candidate_index": index, "status": "failed",
                "meta_json": {"seed": job["seeds"][index], "error": error}}, None, utcnow())

        self.write(commit)
        self.log.write("candidate", job_key=job["job_key"], candidate_index=index, status="failed", error=error)
        self.publish("candidate.finished", job_key=job["job_key"], candidate_index=index, status="failed")

    def _finish_job(self, job_row: dict, job: dict) -> None:

        project_id = self.handle.id

        def finish() -> dict:
            candidates = repo.list_candidates([job_row["id"]])
            reports = repo.reports_for([c["id"] for c in candidates])
            checked = [c for c in candidates if c["status"] != "failed"]
            # Near-duplicates are judged among siblings once all are in: the same answer whatever the order.
            pairs = [(c, reports[c["id"]]["summary_json"]) for c in checked]
            for cand, summary in mark_near_duplicates(pairs, self.qa_duplicate_distance):
                repo.update_report(reports[cand["id"]]["id"], summary)
                repo.update_candidate(cand["id"], {"rank_soft_warnings": summary["soft_warnings"]})
                cand["rank_soft_warnings"] = summary["soft_warnings"]
            ranked = [ranking.Ranked(c["candidate_index"], c["rank_hard_failures"], c["rank_soft_warnings"],
                                     float(c["rank_avg_chroma_exceed"]), c["meta_json"].get("quality_score", 0.0))
                      for c in checked]
            order = [r.index for r in ranking.rank(ranked)]
            for c in checked:
                repo.update_candidate(c["id"], {"meta_json": {**c["meta_json"], "rank": order.index(
                    c["candidate_index"]) + 1}})
            best = ranking.choose(ranked)
            if best is None:
                status = "failed_output_guard" if checked else "failed"
                changes = {"status": status, "selected_candidate_index": None, "final_asset_id": None}
            else:
                chosen = next(c for c in checked if c["candidate_index"] == best.index)
                changes = {"status": "done", "selected_candidate_index": best.index,
                           "final_asset_id": chosen["final_asset_id"]}
            changes["meta_json"] = {**job_row["meta_json"], "ranking": order}
            repo.update_job(job_row["id"], changes)
            audit.record(project_id, None, "job.finished", {"run_id": self.run_id, "job_id": job_row["id"],
                                                            "status": changes["status"],
                                                            "selected": changes["selected_candidate_index"]})
            return changes

        changes = self.write(finish)
        self.log.write("job", job_key=job["job_key"], status=changes["status"],
                       selected_candidate_index=changes["selected_candidate_index"], ranking=changes["meta_json"]
                       ["ranking"])
        self.publish("job.finished", job_key=job["job_key"], status=changes["status"],
                     selected_candidate_index=changes["selected_candidate_index"])

    def _cancel_rest(self, why: dict | None = None) -> None:
        """The jobs not finished end failed, their meta saying why (default: canceled)."""
        why = why or {"canceled": True}

        def cancel() -> int:
            left = [j for j in repo.list_jobs(self.run_id) if j["status"] not in repo.FINISHED_JOB]
            for job in left:
                repo.update_job(job["id"], {"status": "failed", "meta_json": {**job["meta_json"], **why}})
            return len(left)

        left = self.write(cancel)
        self.log.write("canceled" if "canceled" in why else "stopped", jobs_left=left, **why)

    def _finish(self, snapshot: dict, products: bool = True, stopped: str | None = None) -> None:
        from iat.pipeline import outputs

        counts = self.read(repo.job_counts, self.run_id)
        done = counts.get("done", 0)
        total = sum(counts.values())
        status = "done" if done == total else "partial" if done else "failed"
        made: dict = {}
        if products:
            try:
                made = outputs.finish_run(self, snapshot, status)
            except Exception as exc:  # noqa: BLE001 - the run's rows are whole; it ends without its sheet
                log.exception("run %s: its contact sheet and results could not be written", self.run_id)
                self.log.write("products_failed", error=type(exc).__name__)
                made = {"products_error": type(exc).__name__}
        if stopped:
            made["stopped"] = stopped
        self.write(repo.update_run, self.handle.id, self.run_id, {"status": status, "finished_at": utcnow()},
                   "run.canceled" if self.cancel.is_set() else "run.finished",
                   {"status": status, "jobs": counts, **made})
        self.publish("run.finished", status=status, jobs=counts, **made)
        shutil.rmtree(self.run_dir / "work", ignore_errors=True)
