"""The built-in agent's work, per instruction type: registry commands only (through the job's `call`, each one a
logged step), so an instruction gets the validation, audit rows, events and typed errors any client gets.

Each handler takes the job (iat.copilot.executor._Job) and returns the `result` event's payload (the instruction
ends done), or raises a typed error (it ends failed with that error), or returns None when it published its end
itself (delete_project). What a handler keeps in the dispatch row's state_json lets recover() go on after a
restart: a pipeline_run's run id, a qa_check's run id and the reports it already has.
"""

from __future__ import annotations

from iat.copilot import actions, repo
from iat.copilot.executor import ACTIVE_RUN, _Ended, shrink
from iat.errors import Conflict, IATError, NotFound

RESULT_ITEMS = 50  # sync items shown in a result


# --- pipeline_run: runs.start, then the run followed to its end ---


def _budget_confirmed(job) -> bool:
    """A user confirmed the instruction and it was over the budget when created: runs.start may go over it."""
    if not job.row["confirmed_by_user_id"]:
        return False
    events, _ = job.handle.store.read(repo.list_events, job.handle.id, job.id, 5, None)
    created = next((e["event_payload_json"] for e in events if e["event_type"] == "status_change"
                    and e["event_payload_json"].get("from") is None), {})
    estimate = created.get("estimate") or {}
    left = estimate.get("left_usd")
    return left is not None and float(estimate.get("estimate_usd") or 0) > float(left)


def _run_result(job, run: dict) -> dict:
    run_id, status = run["id"], run["status"]
    if status == "failed":
        raise Conflict(f"run {run_id} failed: no shot got a final image", details={"run_id": run_id,
                                                                                   "jobs": run["jobs"]})
    jobs = job.call("read the run's final images", "jobs.list", slug=job.slug, run_id=run_id)["items"]
    outputs = job.call("read the run's outputs", "runs.outputs", slug=job.slug, run_id=run_id)
    finals = [{"job_key": j["job_key"], "final_asset_id": j["final_asset_id"]} for j in jobs if j["final_asset_id"]]
    result = {"run_id": run_id, "status": status, "jobs": run["jobs"], "finals": finals,
              "outputs": {k: outputs[k] for k in ("contact_sheet_asset_id", "contact_sheet_html_asset_id",
                                                  "run_log_asset_id", "results_dir")},
              "partial": status == "partial"}
    if status == "partial":
        result["message"] = (f"the run ended partial: {len(finals)} of {len(jobs)} shots have a final image; "
                             "the others failed")
    return result


def pipeline_run(job) -> dict:
    started: dict = {"run_id": job.state.get("run_id")}

    def keep(out: dict) -> dict:
        started["run_id"] = out["id"]  # known before the log that stores it: a cancel racing it still stops it
        return {"run_id": out["id"]}

    try:
        if started["run_id"] is None:
            params = actions.run_params(job.app, job.handle, job.payload)
            if _budget_confirmed(job):
                params["confirm_budget"] = True
            job.call("start the run", "runs.start", keep=keep, **params)
        else:
            job.log({"step": "follow the run again after a restart", "run_id": started["run_id"]})
        job.log({"step": "follow the run", "run_id": started["run_id"]})
        run = job.follow(started["run_id"], own=True)
    except _Ended:
        if job.work.cancel.is_set() and started["run_id"]:  # canceled: so is its run (follow did it if it could)
            job.agent._cancel_run(job.slug, started["run_id"])
        raise
    return _run_result(job, run)


# --- qa_check: quality.check on each final image of a run, or on the assets given ---


def _report(asset_id: str, out: dict) -> dict:
    summary = out["summary_json"]
    return {"asset_id": asset_id, "report_id": out["id"], "passed": bool(summary.get("passed")),
            "hard_failures": summary.get("hard_failures"), "soft_warnings": summary.get("soft_warnings"),
            "quality_score": summary.get("quality_score")}


def qa_check(job) -> dict:
    inputs, execution = job.payload["inputs"], job.payload.get("execution", {})
    result: dict = {}
    run_id = inputs.get("run_id")
    if run_id:
        run = job.call("read the run", "runs.get", slug=job.slug, run_id=run_id)
        if run["status"] in ACTIVE_RUN:
            job.log({"step": "wait for the run to end", "run_id": run_id}, state={"run_id": run_id})
            run = job.follow(run_id, own=False)
        jobs = job.call("read the run's final images", "jobs.list", slug=job.slug, run_id=run_id)["items"]
        asset_ids = [j["final_asset_id"] for j in jobs if j["final_asset_id"]]
        if not asset_ids:
            raise Conflict(f"run {run_id} has no final image to check (it ended {run['status']})",
                           details={"run_id": run_id, "status": run["status"]})
        result["run_id"] = run_id
    else:
        asset_ids = list(inputs["asset_ids"])
    options = {k: execution[k] for k in ("style_guide_id", "require_transparency", "size_check") if k in execution}
    done: dict = dict(job.state.get("checked") or {})  # asset id -> report, kept across a restart
    for number, asset_id in enumerate(asset_ids, 1):
        if asset_id in done:
            continue
        out = job.call(f"check image {number} of {len(asset_ids)}", "quality.check", slug=job.slug,
                       asset_id=asset_id, keep=lambda out, a=asset_id: {"checked": {**done, a: _report(a, out)}},
                       **options)
        done[asset_id] = _report(asset_id, out)
    reports = [done[a] for a in asset_ids]
    passed = sum(1 for r in reports if r["passed"])
    return {**result, "reports": reports, "passed": passed, "failed": len(reports) - passed}


# --- storage_sync: storage.sync ---


def storage_sync(job) -> dict:
    inputs, execution = job.payload["inputs"], job.payload.get("execution", {})
    params = {"slug": job.slug, "direction": inputs.get("direction", "push"),
              "delete_remote": bool(inputs.get("delete_remote"))}
    if inputs.get("paths"):
        params["paths"] = inputs["paths"]
    if execution.get("dry_run") is not None:
        params["dry_run"] = execution["dry_run"]
    # Remote deletes only with a user's confirmation (the guardrails required one for delete_remote).
    params["confirm_delete"] = params["delete_remote"] and bool(job.row["confirmed_by_user_id"])
    out = job.call("sync the project's files", "storage.sync", **params)
    items = out.pop("items")
    return {**out, "items": items[:RESULT_ITEMS], "items_shown": min(len(items), RESULT_ITEMS),
            "items_truncated": out["items_truncated"] or len(items) > RESULT_ITEMS}


# --- asset_edit: images.remove_background / images.upscale / images.color_correct ---

_EDITS = {  # operation -> (command, execution options it takes)
    "remove_background": ("images.remove_background", ("engines", "refine")),
    "upscale": ("images.upscale", ("engine",)),
    "color_correct": ("images.color_correct", ("style_guide_id",)),
}


def asset_edit(job) -> dict:
    inputs, execution = job.payload["inputs"], job.payload.get("execution", {})
    method, options = _EDITS[inputs["operation"]]
    params = {"slug": job.slug, "asset_id": inputs["asset_id"],
              **{k: execution[k] for k in options if execution.get(k) is not None}}
    if inputs["operation"] == "upscale":
        params["factor"] = inputs["factor"]
    ignored = sorted(k for k in execution if k not in options)
    if ignored:
        job.log({"step": "options", "message": f"{inputs['operation']} does not take {', '.join(ignored)}; "
                                               "left out", "ignored": ignored})
    out = job.call(inputs["operation"].replace("_", " "), method, **params)
    result = {"operation": inputs["operation"], "source_asset_id": inputs["asset_id"],
              "asset_id": out["asset"]["id"], "asset": shrink_asset(out["asset"])}
    for key in ("engine", "factor", "model", "style_guide_id"):
        if key in out:
            result[key] = out[key]
    if "mask" in out:
        result["mask_asset_id"] = out["mask"]["id"]
    return result


def shrink_asset(asset: dict) -> dict:
    return {k: asset.get(k) for k in ("id", "kind", "mime_type", "width", "height", "sha256", "storage_uri")}


# --- custom: export_project, select_candidate, delete_asset, delete_project ---


def _select_candidate(job, inputs: dict) -> dict:
    run_id, key, index = inputs["run_id"], inputs["job_key"], inputs["candidate_index"]
    jobs = job.call("find the shot", "jobs.list", slug=job.slug, run_id=run_id)["items"]
    shot = next((j for j in jobs if j["job_key"] == key), None)
    if shot is None:
        raise NotFound(f"run {run_id} has no shot {key!r}", details={"run_id": run_id, "job_key": key})
    candidates = job.call("find the candidate", "candidates.list", slug=job.slug, job_id=shot["id"])["items"]
    chosen = next((c for c in candidates if c["candidate_index"] == index), None)
    if chosen is None:
        raise NotFound(f"shot {key!r} of run {run_id} has no candidate {index}",
                       details={"run_id": run_id, "job_key": key, "candidate_index": index,
                                "candidates": sorted(c["candidate_index"] for c in candidates)})
    reason = f"agent instruction {job.id}: {job.payload['objective']}"[:2000]
    out = job.call("select the candidate", "candidates.select", slug=job.slug, candidate_id=chosen["id"],
                   reason=reason)
    return {"run_id": run_id, "job_key": key, "candidate_index": index, "candidate_id": chosen["id"],
            "final_asset_id": out["job"]["final_asset_id"], "report_id": out["report_id"]}


def _delete_project(job) -> None:
    """See iat.copilot.executor: log, delete, then the end published from memory (the rows went with the
    project); a failed delete fails the instruction like any step."""
    job.check()
    job.log({"step": "delete the project", "method": "projects.delete", "params": {"confirm": True},
             "message": "this instruction's rows go with the project; its end is published, not stored"})
    try:
        out = actions.call(job.app, "projects.delete", slug=job.slug, confirm=True)
    except Exception:
        try:  # a failed delete may have closed the project's database: write the failure through a fresh handle
            job.handle = job.app.projects.open(job.slug)
        except IATError:
            pass
        raise
    job.publish_end({"deleted_project": out})


def custom(job) -> dict | None:
    inputs = job.payload["inputs"]
    action = inputs["action"]
    if action == "export_project":
        out = job.call("export the project", "exports.create", slug=job.slug, format=inputs.get("format", "tar.gz"))
        return {"action": action, "export": {k: out.get(k) for k in ("id", "format", "path", "size_bytes", "sha256",
                                                                     "export_asset_id", "files")}}
    if action == "select_candidate":
        return {"action": action, **_select_candidate(job, inputs)}
    if action == "delete_asset":
        out = job.call("delete the asset", "assets.delete", slug=job.slug, asset_id=inputs["asset_id"])
        return {"action": action, "asset_id": inputs["asset_id"], "file_removed": out["file_removed"],
                "links_removed": len(out["links_removed"]), "asset": shrink_asset(out["asset"])}
    if action == "delete_project":
        _delete_project(job)
        return None
    raise Conflict(f"the built-in agent has no custom action {action!r}", details={"action": action})


HANDLERS = {"pipeline_run": pipeline_run, "qa_check": qa_check, "storage_sync": storage_sync,
            "asset_edit": asset_edit, "custom": custom}
