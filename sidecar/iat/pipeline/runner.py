"""The runner: works through queued runs on its own threads, apart from the request workers.

One run at a time per App (its jobs in shot-list order), the candidates of a job in parallel on a small pool.
The database rows are the queue (see iat.pipeline.repo): `runs.start` writes a planned run and hands its id
here; at start-up every project's unfinished runs are queued again, so a run interrupted at any point (even by
SIGKILL) finishes on the next start with every job done once:

- a candidate's files are stored, then its asset rows, links, candidate row, QA report and audit row are
  written in one transaction, then its event is published; a candidate without a row is redone from its seed
  (same bytes), and files of a candidate that died before its commit are swept as orphans on resume;
- a job is finished (ranked, its best candidate chosen) in one transaction once all its candidates are;
- jobs are claimed (iat.pipeline.claims): several runners (two processes on one app home, workstations sharing
  a studio project on PostgreSQL) drain one run together, each job worked on by one runner at a time, a dead
  runner's job taken over when its lease runs out (at once for a dead process of this host), and the run
  finished by exactly one of them once every job is; a runner whose jobs are done while others still hold claims
  waits for them (polling with a short backoff), then claims or finishes.

`runs.cancel` sets the run's cancel event, which every stage checks: the jobs left are marked failed (canceled)
and the run ends partial or failed. The marks are the cancel request other runners see: a runner whose claimed
job is finished under it reads why on its next heartbeat and stops too. A sidecar that stops leaves its run
`running`, to be resumed (stopping sets the cancel events too, so calls waiting on a provider give up at once;
their candidates are redone).

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

from iat.assets import repo as assets_repo
from iat.assets import store as files
from iat.assets.register import write_with_files
from iat.audit import repo as audit
from iat.cancel import Cancelled
from iat.clock import utcnow
from iat.errors import BudgetExhausted, Conflict, IATError
from iat.pipeline import claims, ranking, repo
from iat.knowledge.rules import parse_rules
from iat.pipeline.candidate import CandidateWork, Tools, run_candidate
from iat.pipeline.post import mark_near_duplicates
from iat.pipeline.runlog import RunLog

if TYPE_CHECKING:
    from iat.app import App
    from iat.projects.directory import ProjectHandle

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
BACKOFF_MIN_S = 0.05  # waiting on other runners' jobs: first poll, doubling up to
BACKOFF_MAX_S = 1.0  # (or lease/3 when shorter)
HEARTBEAT_TICK_S = 1.0  # how often a runner looks for a cancel made elsewhere (leases renew every lease/3)


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
        self.worker = claims.new_worker_id()  # names this runner in the claims it holds
        self.lease_s = float(app.settings.claim_lease_seconds)

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
            _RunWork(self, handle, run_id, run_dir).run()


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
        self.worker = runner.worker
        self.lease_s = runner.lease_s
        self.beat_stop = threading.Event()
        self.order: dict[str, int] = {}
        self.first_job_id: str | None = None

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
        self.order = {job["job_key"]: i for i, job in enumerate(snapshot["jobs"])}
        jobs = sorted(self.read(repo.list_jobs, self.run_id), key=lambda j: self.order[j["job_key"]])
        self.first_job_id = jobs[0]["id"] if jobs else None
        state = self.read(claims.run_state, self.run_id, self.worker, utcnow())
        if run["status"] == "running" and not state.claimable and state.others_live:
            return  # other runners hold every job left (or are finishing it): nothing to do here
        joined = run["status"] == "running" and state.others_live > 0
        if run["status"] == "planned":
            if self.write(repo.start_run, self.handle.id, self.run_id, utcnow()):
                self.log.write("started", run_id=self.run_id, provider=snapshot["provider"], jobs=len(jobs),
                               candidates=snapshot["candidates"], stages=snapshot["stages"], worker=self.worker)
            else:
                joined = True  # another runner started it a moment ago
        elif joined:
            self.log.write("joined", run_id=self.run_id, worker=self.worker, others=state.others_live)
        else:  # interrupted (a crash, a stop): nobody else is on it
            removed = self._sweep() if not self.read(claims.others_live_in_project, self.worker, utcnow()) else []
            self.log.write("resumed", run_id=self.run_id, orphans_removed=len(removed), worker=self.worker)
            self.write(repo.update_run, self.handle.id, self.run_id,
                       {"status": "running", "started_at": run["started_at"] or utcnow()}, "run.resumed")
        self.publish("run.started", resumed=run["status"] == "running", joined=joined, jobs_total=len(jobs))
        try:
            tools = self._tools(snapshot)
        except IATError as exc:  # the provider is gone, disabled, lacks its key, or its key cannot be read
            self.log.write("provider_unusable", error={"name": exc.name, "message": exc.message})
            if self.read(claims.run_state, self.run_id, self.worker, utcnow()).others_live:
                return  # another workstation can run it: this one leaves it to them
            self._cancel_rest({"error": {"name": exc.name, "message": exc.message}})
            self._finish(snapshot, products=False)
            return
        beat = threading.Thread(target=self._heartbeat, name=f"iat-claims-{self.run_id[:8]}", daemon=True)
        beat.start()
        try:
            self._drain(snapshot, tools, len(jobs))
        finally:
            self.beat_stop.set()
            beat.join()

    def _drain(self, snapshot: dict, tools: Tools, jobs_total: int) -> None:
        """Claims and works jobs until none is left, then finishes the run when no other runner holds a claim on
        it (or leaves it to the one that does)."""
        by_key = {job["job_key"]: job for job in snapshot["jobs"]}
        backoff = BACKOFF_MIN_S
        while True:
            if self.runner._stop.is_set():
                self.log.write("interrupted", reason="the sidecar is stopping")
                self.write(claims.release, self.run_id, self.worker)  # others may take the jobs at once
                return  # stays running: resumed on the next start
            run = self.read(repo.get_run, self.handle.id, self.run_id)
            if run["status"] not in repo.ACTIVE_RUN:
                return  # another runner finished it
            state = self.read(claims.run_state, self.run_id, self.worker, utcnow())
            if state.canceled and not self.cancel.is_set():
                self.cancel.set()  # canceled elsewhere: the marks on its jobs say so
            if state.stopped == "budget":
                self.budget_spent.set()
            stopping = self.cancel.is_set() or self.budget_spent.is_set()
            if stopping and state.unfinished:
                budget = self.budget_spent.is_set() and not self.cancel.is_set()
                self._cancel_rest({"stopped": "budget"} if budget else None)
                continue
            if self.runner.abandoned(self.run_id):  # its project is being deleted: let go of it at once
                self._finish(snapshot, products=False)
                return
            if not state.unfinished:
                if not state.others_live and self.write(claims.claim_finish, self.run_id, self.first_job_id,
                                                        self.worker, self.lease_s, utcnow()):
                    self._finish(snapshot, stopped="budget" if state.stopped == "budget" else None)
                    return
            elif not stopping:
                job_row = self.write(claims.claim_next, self.run_id, self.order, self.worker, self.lease_s,
                                     utcnow())
                if job_row is not None:
                    backoff = BACKOFF_MIN_S
                    try:
                        self._job(snapshot, job_row, by_key[job_row["job_key"]], tools)
                    except _Stopped:
                        continue  # the loop's top says why and what follows
                    done = sum(n for s, n in self.read(repo.job_counts, self.run_id).items()
                               if s in repo.FINISHED_JOB)
                    self.publish("run.progress", jobs_done=done, jobs_total=jobs_total)
                    continue
            # Every job left is someone else's (or the run is being finished): wait for them to end or expire.
            self.runner._stop.wait(backoff)
            backoff = min(backoff * 2, min(BACKOFF_MAX_S, self.lease_s / 3))

    def _heartbeat(self) -> None:
        """Renews this runner's leases every lease/3 and, more often, looks whether a job it holds was finished
        under it: canceled (or stopped by the budget) on another workstation, this runner stops too."""
        tick = min(HEARTBEAT_TICK_S, self.lease_s / 3)
        renewed = time.monotonic()
        while not self.beat_stop.wait(tick):
            try:
                if time.monotonic() - renewed >= self.lease_s / 3:
                    self.write(claims.renew, self.run_id, self.worker, self.lease_s, utcnow())
                    renewed = time.monotonic()
                for job in self.read(claims.held_jobs, self.run_id, self.worker):
                    if job["status"] in repo.FINISHED_JOB:
                        if job["meta_json"].get("canceled"):
                            self.cancel.set()
                        elif job["meta_json"].get("stopped") == "budget":
                            self.budget_spent.set()
            except IATError as exc:  # the project closing under the run: the run's own calls report it
                log.info("run %s: heartbeat stopped: %s", self.run_id, exc.message)
                return
            except Exception:  # noqa: BLE001 - a database hiccup: the next beat tries again
                log.exception("run %s: heartbeat failed", self.run_id)

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
            # Let go of the job: it is finished as canceled, or left for whoever resumes it.
            self.write(claims.release, self.run_id, self.worker, job_row["id"])
            raise _Stopped()
        self._finish_job(job_row, job, k)

    def _candidate(self, snapshot: dict, job_row: dict, job: dict, index: int, tools: Tools) -> None:
        self.check()
        workdir = self.run_dir / "work" / f"{job['job_key']}-{index}-{self.worker.rsplit('/', 1)[-1]}"
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

        try:
            row = write_with_files(self.handle, staged, commit)
        except Conflict:
            # Another runner committed this candidate first (it took the job over while this one's lease had
            # lapsed): its row stands, this copy's files are dropped (write_with_files removed what no row names).
            self._duplicate(job, work.index)
            return
        self._sync("push_paths", [file.stored.rel_uri for file in staged])
        self.log.write("candidate", job_key=job["job_key"], candidate_index=work.index, seed=work.seed,
                       status=status, hard_failures=hard, soft_warnings=soft, candidate_id=row["id"],
                       final_asset_id=row["final_asset_id"])
        self.publish("candidate.finished", job_key=job["job_key"], candidate_index=work.index, status=status)

    def _record_failure(self, job_row: dict, job: dict, index: int, error: dict) -> None:
        def commit() -> dict:
            return repo.insert_candidate(self.handle.id, self.run_id, job_row["id"], {
                "candidate_index": index, "status": "failed",
                "meta_json": {"seed": job["seeds"][index], "error": error}}, None, utcnow())

        try:
            self.write(commit)
        except Conflict:
            self._duplicate(job, index)
            return
        self.log.write("candidate", job_key=job["job_key"], candidate_index=index, status="failed", error=error)
        self.publish("candidate.finished", job_key=job["job_key"], candidate_index=index, status="failed")

    def _duplicate(self, job: dict, index: int) -> None:
        self.log.write("candidate_already_recorded", job_key=job["job_key"], candidate_index=index,
                       worker=self.worker)

    def _sync(self, name: str, rel_paths: list[str]) -> None:
        """Studio projects keep files on S3: a candidate's files go up from the workstation that made them, and the
        finisher fetches what it lacks. Nothing to do for a local project, or while the S3 module is absent."""
        if getattr(self.handle, "backend", "sqlite") != "postgres" or not rel_paths:
            return
        try:
            from iat.sync import s3
        except ImportError:
            return
        fn = getattr(s3, name, None)
        if fn is None:
            return
        try:
            fn(self.app, self.handle, rel_paths)
        except Exception as exc:  # noqa: BLE001 - the rows are committed; a file not mirrored is reported
            log.warning("run %s: %s of %d file(s) failed: %s", self.run_id, name, len(rel_paths), exc)
            self.log.write("sync_failed", operation=name, files=len(rel_paths), error=type(exc).__name__)

    def _finish_job(self, job_row: dict, job: dict, k: int) -> None:

        project_id = self.handle.id

        def finish() -> dict | None:
            current = claims.lock_job(job_row["id"])  # one runner finishes a job, the others find it finished
            if current is None or current["status"] in repo.FINISHED_JOB:
                claims.release(self.run_id, self.worker, job_row["id"])
                return None
            candidates = repo.list_candidates([job_row["id"]])
            if len({c["candidate_index"] for c in candidates}) < k:
                return None  # cannot happen while candidates are only added: kept as a guard, never a half job
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
            changes["meta_json"] = {**current["meta_json"], "ranking": order}
            repo.update_job(job_row["id"], changes)
            claims.release(self.run_id, self.worker, job_row["id"])
            audit.record(project_id, None, "job.finished", {"run_id": self.run_id, "job_id": job_row["id"],
                                                            "status": changes["status"],
                                                            "selected": changes["selected_candidate_index"],
                                                            "worker_id": self.worker})
            return changes

        changes = self.write(finish)
        if changes is None:
            self.log.write("job_finished_elsewhere", job_key=job["job_key"], worker=self.worker)
            return
        self.log.write("job", job_key=job["job_key"], status=changes["status"], worker=self.worker,
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
        """Ends the run: its contact sheet and results, then its status, once (repo.end_run); the caller holds the
        finish claim (or is the only runner, its project going away)."""
        from iat.pipeline import outputs

        counts = self.read(repo.job_counts, self.run_id)
        done = counts.get("done", 0)
        total = sum(counts.values())
        status = "done" if done == total else "partial" if done else "failed"
        canceled = self.cancel.is_set() or self.read(claims.run_state, self.run_id, self.worker, utcnow()).canceled
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

        def end() -> bool:
            ended = repo.end_run(self.handle.id, self.run_id, status, utcnow(),
                                 "run.canceled" if canceled else "run.finished",
                                 {"status": status, "jobs": counts, "worker_id": self.worker, **made})
            claims.release(self.run_id, self.worker)
            return ended

        if not self.write(end):
            self.log.write("finished_elsewhere", worker=self.worker)
            return
        self.publish("run.finished", status=status, jobs=counts, **made)
        shutil.rmtree(self.run_dir / "work", ignore_errors=True)
