"""What a finished run leaves for people: its contact sheet (PNG and a self-contained HTML page) and its run log,
both stored as assets of the run, and a results folder to browse:

    <project>/runs/<run_id>/results/<job_key>/c<index>-<step>.png   every image of every candidate
    <project>/runs/<run_id>/results/<job_key>/c<index>-<step>.json  its JSON sidecar: ids, recipe, metrics
    <project>/runs/<run_id>/results/<job_key>/final.png             the chosen candidate's final image
    <project>/runs/<run_id>/results/contact_sheet.html|.png, run.jsonl

Result images are hard links to the content-addressed files where the filesystem allows (no second copy), else
copies. The folder is a view: it is rebuilt from the rows whenever a run finishes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from iat.assets import repo as assets_repo
from iat.assets import store as files
from iat.clock import format_ts, utcnow
from iat.pipeline import contact_sheet as sheet
from iat.pipeline import repo

if TYPE_CHECKING:
    from iat.pipeline.runner import _RunWork


def finish_run(work: _RunWork, snapshot: dict, status: str) -> dict:
    """Stores the contact sheet and the run log as assets, builds the results folder; returns their ids and
    paths for the run's finishing event."""
    root = work.handle.root
    project_id = work.handle.id
    run = work.read(repo.get_run, project_id, work.run_id)
    order = {job["job_key"]: i for i, job in enumerate(snapshot["jobs"])}
    jobs = sorted(work.read(repo.list_jobs, work.run_id), key=lambda j: order[j["job_key"]])
    candidates = work.read(repo.list_candidates, [j["id"] for j in jobs])
    reports = work.read(repo.reports_for, [c["id"] for c in candidates])
    asset_ids = {a["asset_id"] for c in candidates for a in c["meta_json"].get("assets", [])}
    assets = work.read(_assets_by_id, project_id, sorted(asset_ids))

    sheet_run = _sheet(run, snapshot, jobs, candidates, reports, assets, status, root)
    work.log.write("finished", status=status)
    made = {}
    for key, data, kind, name in (("contact_sheet_asset_id", sheet.render_png(sheet_run), "other", "contact_sheet.png"),
                                  ("contact_sheet_html_asset_id", sheet.render_html(sheet_run).encode(), "other",
                                   "contact_sheet.html"),
                                  ("run_log_asset_id", work.log.read(), "run_log", "run.jsonl")):
        stored = files.put_bytes(root, data, name=name)
        row = work.write(assets_repo.insert_asset, project_id, kind, stored,
                         {"run_id": work.run_id, "role": name.split(".")[0], "file_name": name}, utcnow())
        made[key] = row["id"]
        made[key.replace("_asset_id", "_path")] = str(files.abs_path(root, stored.rel_uri))
    results = _results_folder(work.run_dir / "results", jobs, candidates, reports, assets, snapshot, root, made)
    made["results_dir"] = str(results)
    work.log.path.unlink(missing_ok=True)  # kept as the run_log asset
    return made


def _assets_by_id(project_id: str, ids: list[str]) -> dict[str, dict]:
    from iat.db.models import Asset

    out: dict[str, dict] = {}
    for i in range(0, len(ids), 500):
        for row in Asset.select().where((Asset.project_id == project_id) & Asset.id.in_(ids[i:i + 500])).dicts():
            out[row["id"]] = row
    return out


def _metrics(summary: dict | None) -> sheet.Metrics | None:
    if not summary:
        return None
    notes = tuple(c["name"] for c in summary.get("checks", []) if not c.get("passed", True))
    return sheet.Metrics(hard_failures=summary.get("hard_failures", 0), soft_warnings=summary.get("soft_warnings", 0),
                         avg_chroma_exceedance=summary.get("avg_chroma_exceed", 0.0),
                         quality_score=summary.get("quality_score"), notes=notes)


def _sheet(run: dict, snapshot: dict, jobs: list[dict], candidates: list[dict], reports: dict, assets: dict,
           status: str, root: Path) -> sheet.SheetRun:
    by_job: dict[str, list[dict]] = {}
    for cand in candidates:
        by_job.setdefault(cand["job_id"], []).append(cand)
    sheet_jobs = []
    for job in jobs:
        cands = []
        for cand in sorted(by_job.get(job["id"], []), key=lambda c: c["candidate_index"]):
            made = cand["meta_json"].get("assets", [])
            stages = [(a["step"], assets[a["asset_id"]]["storage_uri"]) for a in made
                      if a["step"] in snapshot["stages"]]
            final = assets.get(cand["final_asset_id"]) if cand["final_asset_id"] else None
            report = reports.get(cand["id"])
            cands.append(sheet.SheetCandidate(
                index=cand["candidate_index"], seed=cand["meta_json"].get("seed"), status=cand["status"],
                stages=stages, final=final["storage_uri"] if final else None,
                metrics=_metrics(report["summary_json"] if report else None), rank=cand["meta_json"].get("rank"),
                chosen=job["selected_candidate_index"] == cand["candidate_index"]))
        sheet_jobs.append(sheet.SheetJob(job_key=job["job_key"], prompt=job["prompt_text"], status=job["status"],
                                         candidates=cands))
    return sheet.SheetRun(id=run["id"], name=f"{snapshot['style_guide']['name']} / {snapshot['provider']}",
                          created=format_ts(run["created_at"]), jobs=sheet_jobs, status=status,
                          provider=snapshot["provider"], root=root)


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _results_folder(folder: Path, jobs: list[dict], candidates: list[dict], reports: dict, assets: dict,
                    snapshot: dict, root: Path, made: dict) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    by_job: dict[str, list[dict]] = {}
    for cand in candidates:
        by_job.setdefault(cand["job_id"], []).append(cand)
    for job in jobs:
        for cand in by_job.get(job["id"], []):
            report = reports.get(cand["id"])
            for item in cand["meta_json"].get("assets", []):
                asset = assets[item["asset_id"]]
                stem = folder / job["job_key"] / f"c{cand['candidate_index']}-{item['step']}"
                _place(files.abs_path(root, asset["storage_uri"]), stem.with_suffix(".png"))
                sidecar = {"asset_id": asset["id"], "sha256": asset["sha256"], "storage_uri": asset["storage_uri"],
                           "run_id": job["run_id"], "job_id": job["id"], "job_key": job["job_key"],
                           "candidate_id": cand["id"], "candidate_index": cand["candidate_index"],
                           "step": item["step"], "kind": asset["kind"], "width": asset["width"],
                           "height": asset["height"], "metadata": asset["metadata_json"],
                           "chosen": job["selected_candidate_index"] == cand["candidate_index"],
                           "qa": report["summary_json"] if report and cand["final_asset_id"] == asset["id"] else None}
                stem.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str))
        if job["final_asset_id"]:
            final = assets[job["final_asset_id"]]
            _place(files.abs_path(root, final["storage_uri"]), folder / job["job_key"] / "final.png")
    for key, name in (("contact_sheet_path", "contact_sheet.png"), ("contact_sheet_html_path", "contact_sheet.html"),
                      ("run_log_path", "run.jsonl")):
        _place(Path(made[key]), folder / name)
    (folder / "README.txt").write_text(f"Results of run {jobs[0]['run_id'] if jobs else ''}, made {format_ts(utcnow())}."
                                       " Open contact_sheet.html; each <job>/final.png is the chosen image.\n")
    return folder
