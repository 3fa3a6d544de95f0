"""The runs service between the commands and the rows: plan or queue a run (everything checked before a row is
written), replay one from its snapshot, cancel one, list jobs and candidates, record a person's choice."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from iat.audit import repo as audit
from iat.clock import utcnow
from iat.errors import ConfirmationRequired, Conflict, IATError, InvalidParams
from iat.knowledge import repo as knowledge_repo
from iat.pipeline import planner, repo
from iat.pipeline.shots import parse_shots

if TYPE_CHECKING:
    from iat.app import App

DEFAULT_ENGINES = ("key",)


def _invalid(message: str, loc: str, kind: str = "value_error") -> InvalidParams:
    return InvalidParams(message, details={"errors": [{"loc": [loc], "msg": message, "type": kind}]})


def create(app: App, p: Any, mode: str, actor_id: str) -> tuple[dict, dict, dict]:
    """Checks the whole request, then writes the run and its jobs in one transaction: (run row, snapshot,
    cost estimate)."""
    shots = parse_shots([s.model_dump() for s in p.shots] if p.shots is not None else None, p.shots_csv)
    stages = planner.check_stages(list(p.stages) if p.stages else None)
    from iat.providers import accounts

    if p.provider not in app.providers:
        raise _invalid(f"unknown provider {p.provider!r}; known: {', '.join(app.providers.codes())}", "provider")
    provider = app.providers.get(p.provider)
    if "generate" not in getattr(provider, "operations", ("generate",)):  # e.g. removebg: an engine's paid API
        raise _invalid(f"provider {p.provider!r} does not generate images (it offers "
                       f"{', '.join(provider.operations)}); a run needs one of: "
                       f"{', '.join(c for c in app.providers.codes() if _generates(app, c))}", "provider")
    handle = app.projects.open(p.slug)
    account = accounts.account(app, handle, p.provider, reveal=False)
    if mode == "run":
        status = provider.status(account)
        if not status.ready:
            raise Conflict(status.reason or f"provider {p.provider} is not ready",
                           details={"provider_code": p.provider})
    project_settings = handle.store.read(_project_settings, handle.id)
    engines = list(p.background_engines or project_settings.get("background_engines") or DEFAULT_ENGINES)
    for code in engines:
        if code not in app.engines or getattr(app.engines.get(code), "op", None) != "remove_background":
            raise _invalid(f"unknown background-removal engine {code!r}", "background_engines")

    def load() -> planner.Knowledge:
        if p.style_guide_id is not None:
            guide = knowledge_repo.get_style_guide(handle.id, str(p.style_guide_id))
        else:
            guide = knowledge_repo.default_style_guide(handle.id)
        return planner.Knowledge(guide, knowledge_repo.all_characters(handle.id),
                                 knowledge_repo.active_templates(handle.id, p.template_name))

    knowledge = handle.store.read(load)
    snapshot = planner.build_snapshot(
        shots=shots, knowledge=knowledge, provider_code=p.provider,
        model=account.config.model or getattr(provider, "model", p.provider),
        stages=stages, candidates=p.candidates, seed=p.seed if p.seed is not None else secrets.randbelow(2**31 - 1),
        post={"background_engines": engines, "upscale_factor": p.upscale_factor, "color_correct": p.color_correct,
              **_upscaler(app, p), **_refiner(app, p)})
    estimate = _estimate(provider, account, snapshot)
    snapshot["estimate"] = estimate
    # The configuration the run was planned with (never a secret), so the run log says what was asked of whom.
    snapshot["provider_config"] = account.config.model_dump(mode="json")
    snapshot["budget_confirmed"] = False
    if mode == "run":
        snapshot["budget_confirmed"] = _check_budget(app, handle, estimate, bool(getattr(p, "confirm_budget", False)))
    run = {"run_mode": mode, "provider_code": p.provider, "model_name": snapshot["model"],
           "settings_snapshot_json": snapshot, **_uniform(shots)}
    row = handle.store.write(repo.create_run, handle.id, run, None, actor_id, utcnow())
    return row, row["settings_snapshot_json"], estimate


def _upscaler(app: App, p: Any) -> dict:
    """The upscale engine (and model) of the run's post-processing, resolved now so the snapshot records it."""
    if p.upscale_factor is None:
        return {}
    from iat.engines.upscale_select import select
    from iat.errors import EngineError

    try:
        return select(app, getattr(p, "upscale_engine", "auto"), p.upscale_factor).record()
    except InvalidParams as exc:
        raise _invalid(f"upscale_engine: {exc.message}", "upscale_engine") from None
    except (Conflict, EngineError) as exc:  # the engine asked for cannot run here (onnx_sr with no model)
        raise Conflict(f"upscale_engine: {exc.message}", details={**exc.details, "loc": "upscale_engine"}) from None


def _refiner(app: App, p: Any) -> dict:
    """The cut-outs' refinement, resolved now so the snapshot records it: the method with all its options, and
    for ViTMatte the model's name and sha256 (iat.engines.refine.record)."""
    if not getattr(p, "refine", False):
        return {}
    from iat.engines.base import EngineContext
    from iat.engines.refine import record

    return {"refine": record(EngineContext(app), {})}


def _check_refine_model(app: App, snapshot: dict, run_id: str) -> None:
    """A replay refines with the matting model its run recorded: refused when it is gone or its file changed."""
    refine = (snapshot.get("post") or {}).get("refine")
    if not isinstance(refine, dict) or not refine.get("model"):
        return
    from iat.engines.base import EngineContext
    from iat.engines.refine import prepare

    try:
        prepare(EngineContext(app), refine)
    except InvalidParams as exc:
        raise Conflict(f"run {run_id} refined its cut-outs with matting model {refine['model']!r}: {exc.message}",
                       details={"run_id": run_id, "model": refine["model"], "sha256": refine.get("sha256"),
                                "reason": "model_missing_or_changed"}) from None


def _check_upscale_model(app: App, snapshot: dict, run_id: str) -> None:
    """A replay runs the model its run recorded: refused when that model is gone or its file changed."""
    post = snapshot.get("post") or {}
    name = post.get("upscale_model")
    if not post.get("upscale_factor") or not name:
        return
    from iat.errors import NotFound

    details = {"run_id": run_id, "model": name, "sha256": post.get("upscale_model_sha256")}
    try:
        model = app.models.get(name)
    except NotFound:
        raise Conflict(f"run {run_id} upscaled with model {name!r}, which is no longer installed",
                       details={**details, "reason": "model_missing"}) from None
    if model.entry.sha256 != post.get("upscale_model_sha256"):
        raise Conflict(f"run {run_id} upscaled with model {name!r} of sha256 {post.get('upscale_model_sha256')}; "
                       f"the installed file is {model.entry.sha256}",
                       details={**details, "installed_sha256": model.entry.sha256, "reason": "model_changed"})


def _project_settings(project_id: str) -> dict:
    from iat.projects.repo import get_project

    return get_project(project_id)["settings_json"]


def _uniform(shots) -> dict:
    """The run's time_of_day and weather columns: set when every shot shares one."""
    times = {s.time_of_day for s in shots}
    weathers = {s.weather for s in shots}
    return {"time_of_day": times.pop() if len(times) == 1 else None,
            "weather": weathers.pop() if len(weathers) == 1 else None}


def _check_budget(app: App, handle, estimate: dict, confirmed: bool) -> bool:
    """A run whose estimate exceeds what is left of the budget needs the user's confirmation. Returns whether the
    run goes over the budget by confirmation (then the budget does not stop it)."""
    budget = app.ledger.budget(handle)
    if budget["budget_usd"] is None or estimate["cost_usd"] <= budget["left_usd"]:
        return False
    if not confirmed:
        raise ConfirmationRequired(
            f"this run would cost about {estimate['cost_usd']:.4f} USD and the project has "
            f"{budget['left_usd']:.4f} USD of its budget left; start it with confirm_budget to go over the budget",
            details={"estimate_usd": estimate["cost_usd"], **budget})
    return True


def _generates(app: App, code: str) -> bool:
    return "generate" in getattr(app.providers.get(code), "operations", ("generate",))


def _estimate(provider, account, snapshot: dict) -> dict:
    """What the provider says the run would cost, summed over every stage of every candidate."""
    from iat.providers.base import GenerateRequest

    width, height = planner.output_size(snapshot)
    units = cost = 0.0
    currency = "USD"
    for job in snapshot["jobs"]:
        for stage in snapshot["stages"]:
            request = GenerateRequest(mode="text2img", stage=stage, prompt=job["prompts"][stage], width=width,
                                      height=height, seed=job["seeds"][0], scene=planner.scene_of(snapshot, job))
            one = provider.estimate(request, account)
            units += one.units * snapshot["candidates"]
            cost += one.cost_usd * snapshot["candidates"]
            currency = one.currency
    return {"units": round(units, 6), "cost_usd": round(cost, 6), "currency": currency}


def resume_unfinished(app: App) -> list[str]:
    """Queues every unfinished run of every active project: called once after start, off the request path."""
    import logging

    log = logging.getLogger(__name__)
    queued = []
    for entry in app.projects.list("active"):
        try:
            handle = app.projects.open(entry["slug"])
            runs = handle.store.read(repo.active_runs, handle.id)
        except IATError as exc:
            log.warning("cannot look for unfinished runs of %s: %s", entry["slug"], exc.message)
            continue
        for run in runs:
            app.runner.submit(entry["slug"], run["id"])
            queued.append(run["id"])
    if queued:
        log.info("resuming %d unfinished run(s)", len(queued))
    return queued


def replay(app: App, slug: str, run_id: str, actor_id: str) -> dict:
    handle = app.projects.open(slug)
    source = handle.store.read(repo.get_run, handle.id, run_id)
    snapshot = source["settings_snapshot_json"]
    if snapshot.get("format") != planner.SNAPSHOT_FORMAT:
        raise Conflict(f"run {run_id} has no snapshot this version can replay", details={"run_id": run_id})
    if snapshot["provider"] not in app.providers:
        raise Conflict(f"run {run_id} used provider {snapshot['provider']!r}, which is not available",
                       details={"run_id": run_id, "provider": snapshot["provider"]})
    _check_upscale_model(app, snapshot, run_id)
    _check_refine_model(app, snapshot, run_id)
    # The replay's budget is checked call by call: a confirmation given for the run it replays is not carried over.
    snapshot = {**snapshot, "budget_confirmed": False}
    run = {"run_mode": "run", "provider_code": source["provider_code"], "model_name": source["model_name"],
           "time_of_day": source["time_of_day"], "weather": source["weather"], "settings_snapshot_json": snapshot,
           "replay_of": run_id}
    return handle.store.write(repo.create_run, handle.id, run, None, actor_id, utcnow())


def cancel(app: App, slug: str, run_id: str, actor_id: str) -> tuple[dict, dict]:
    handle = app.projects.open(slug)
    row = handle.store.read(repo.get_run, handle.id, run_id)
    if row["run_mode"] != "run" or row["status"] not in repo.ACTIVE_RUN:
        raise Conflict(f"run {run_id} is {row['status']} ({row['run_mode']}): nothing to cancel",
                       details={"run_id": run_id, "status": row["status"], "run_mode": row["run_mode"]})
    if not app.runner.cancel(run_id):
        # Nobody here works on it: finish it as canceled now, or, while other runners hold claims on it (another
        # process, another workstation), mark its jobs left canceled: they read it on their next heartbeat, stop,
        # and one of them ends the run.
        handle.store.write(_cancel_elsewhere, handle.id, run_id, actor_id, app.runner.worker)
    return handle.store.read(lambda: (repo.get_run(handle.id, run_id), repo.job_counts(run_id)))


def _cancel_elsewhere(project_id: str, run_id: str, actor_id: str, worker: str) -> None:
    from iat.pipeline import claims

    if not claims.run_state(run_id, worker, utcnow()).others_live:
        _cancel_now(project_id, run_id, actor_id)
        return
    for job in repo.list_jobs(run_id):
        if job["status"] not in repo.FINISHED_JOB:
            repo.update_job(job["id"], {"status": "failed", "meta_json": {**job["meta_json"], "canceled": True}})
    audit.record(project_id, actor_id, "run.cancel_requested", {"run_id": run_id})


def _cancel_now(project_id: str, run_id: str, actor_id: str) -> None:
    jobs = repo.list_jobs(run_id)
    for job in jobs:
        if job["status"] not in repo.FINISHED_JOB:
            repo.update_job(job["id"], {"status": "failed", "meta_json": {**job["meta_json"], "canceled": True}})
    done = sum(1 for j in jobs if j["status"] == "done")
    repo.update_run(project_id, run_id, {"status": "partial" if done else "failed", "finished_at": utcnow()},
                    "run.canceled", {"status": "partial" if done else "failed"}, actor_id)


def jobs(app: App, slug: str, run_id: str) -> list[dict]:
    handle = app.projects.open(slug)

    def read() -> list[dict]:
        run = repo.get_run(handle.id, run_id)
        order = {job["job_key"]: i for i, job in enumerate(run["settings_snapshot_json"]["jobs"])}
        return sorted(repo.list_jobs(run_id), key=lambda j: order.get(j["job_key"], 0))

    return handle.store.read(read)


def candidates(app: App, slug: str, run_id: str | None, job_id: str | None) -> list[dict]:
    handle = app.projects.open(slug)

    def read() -> list[dict]:
        if job_id is not None:
            job_ids = [repo.get_job(handle.id, job_id)["id"]]
        else:
            job_ids = [j["id"] for j in jobs(app, slug, run_id)]
        rows = repo.list_candidates(job_ids)
        reports = repo.reports_for([c["id"] for c in rows])
        position = {jid: i for i, jid in enumerate(job_ids)}
        rows.sort(key=lambda c: (position[c["job_id"]], c["candidate_index"]))
        return [{**c, "rank_avg_chroma_exceed": float(c["rank_avg_chroma_exceed"]),
                 "report": reports[c["id"]]["summary_json"] if c["id"] in reports else None} for c in rows]

    return handle.store.read(read)


def select(app: App, slug: str, candidate_id: str, reason: str, actor_id: str) -> tuple[dict, str]:
    handle = app.projects.open(slug)

    def choose() -> tuple[dict, str]:
        cand = repo.get_candidate(handle.id, candidate_id)
        job = repo.get_job(handle.id, cand["job_id"])
        if cand["final_asset_id"] is None:
            raise Conflict(f"candidate {candidate_id} has no output to choose (status {cand['status']})",
                           details={"candidate_id": candidate_id, "status": cand["status"]})
        if job["status"] in ("planned", "running"):
            raise Conflict("the job is still running; choose once it is finished",
                           details={"job_id": job["id"], "status": job["status"]})
        previous = job["selected_candidate_index"]
        repo.update_job(job["id"], {"status": "done", "selected_candidate_index": cand["candidate_index"],
                                    "final_asset_id": cand["final_asset_id"],
                                    "meta_json": {**job["meta_json"], "human_choice": {
                                        "candidate_index": cand["candidate_index"], "reason": reason,
                                        "previous": previous, "by": actor_id}}})
        report = repo.insert_report(handle.id, job["run_id"], job["id"], cand["id"], "human_review", {
            "decision": "selected", "reason": reason, "candidate_index": cand["candidate_index"],
            "previous_selected_index": previous, "previous_status": job["status"], "reviewer_user_id": actor_id},
            utcnow())
        audit.record(handle.id, actor_id, "candidate.selected", {"job_id": job["id"], "candidate_id": cand["id"],
                                                                 "previous": previous, "reason": reason})
        return repo.get_job(handle.id, job["id"]), report["id"]

    return handle.store.write(choose)
