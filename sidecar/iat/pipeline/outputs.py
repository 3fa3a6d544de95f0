"""What a finished run leaves for people: its contact sheet (PNG and a self-contained HTML page per page of eight
jobs) and its run log, all stored as assets of the run, and a results folder to browse:

    <project>/runs/<run_id>/results/<job_key>/c<index>-<step>.png   every image of every candidate (a cut-out's
                                                                      mask as c<index>-mask.png)
    <project>/runs/<run_id>/results/<job_key>/c<index>-<step>.json  its JSON sidecar: ids, recipe, metrics
    <project>/runs/<run_id>/results/<job_key>/final.png             the chosen candidate's final image
    <project>/runs/<run_id>/results/contact_sheet.html|.png (then contact_sheet-2.html|.png ...), run.jsonl

Result images are hard links to the content-addressed files where the filesystem allows (no second copy), else
copies. The folder is a view: it is rebuilt from the rows whenever a run finishes.

On a studio project several workstations make a run's candidates, each keeping the files it made: the finisher
fetches the files it lacks from the project's S3 mirror first; files still missing (no mirror) are drawn as
missing tiles on the contact sheet, left out of the results folder, and counted in the run log.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from iat.assets import repo as assets_repo
from iat.assets import store as files
from iat.assets.register import write_with_files
from iat.clock import format_ts, utcnow
from iat.pipeline import contact_sheet as sheet
from iat.pipeline import repo

JOBS_PER_PAGE = 8  # jobs per contact sheet page (a page's PNG is at most ~8 x 16 candidates of thumbnails)

if TYPE_CHECKING:
    from iat.pipeline.runner import _RunWork


def finish_run(work: _RunWork, snapshot: dict, status: str) -> dict:
    """Stores the contact sheet pages and the run log as assets, builds the results folder; returns their ids and
    paths for the run's finishing event. Works page by page, reading only a page's rows: a run's size never
    decides how much memory its end takes."""
    root = work.handle.root
    project_id = work.handle.id
    run = work.read(repo.get_run, project_id, work.run_id)
    order = {job["job_key"]: i for i, job in enumerate(snapshot["jobs"])}
    jobs = sorted(work.read(repo.list_jobs, work.run_id), key=lambda j: order[j["job_key"]])
    work.log.write("finished", status=status)
    results = work.run_dir / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    pages = [jobs[i:i + JOBS_PER_PAGE] for i in range(0, len(jobs), JOBS_PER_PAGE)] or [[]]
    made: dict = {"contact_sheet_pages": []}
    missing: set[str] = set()
    for number, page_jobs in enumerate(pages, start=1):
        candidates = work.read(repo.list_candidates, [j["id"] for j in page_jobs])
        reports = work.read(repo.reports_for, [c["id"] for c in candidates])
        asset_ids = {a["asset_id"] for c in candidates for a in _images(c)}
        assets = work.read(_assets_by_id, project_id, sorted(asset_ids))
        _fetch_missing(work, assets.values())
        sheet_run = _sheet(run, snapshot, page_jobs, candidates, reports, assets, status, root)
        suffix = "" if number == 1 else f"-{number}"
        png, html = work.run_dir / f"contact_sheet{suffix}.png", work.run_dir / f"contact_sheet{suffix}.html"
        sheet.write_contact_sheet(sheet_run, png, html)  # each image read and shrunk once for both
        page = {}
        for key, path in (("png", png), ("html", html)):
            row, where = _store(work, path, "other", {"role": "contact_sheet", "page": number,
                                                       "pages": len(pages)})
            page[f"{key}_asset_id"], page[f"{key}_path"] = row["id"], where
            _place(Path(where), results / path.name)
        made["contact_sheet_pages"].append(page)
        missing |= _place_results(results, page_jobs, candidates, reports, assets, root)
    if missing:
        work.log.write("files_missing", count=len(missing), asset_ids=sorted(missing)[:50],
                       note="made on another workstation and not on the project's S3 mirror: left out of the "
                            "results and shown as missing on the contact sheet")
    first = made["contact_sheet_pages"][0]
    made.update({"contact_sheet_asset_id": first["png_asset_id"], "contact_sheet_path": first["png_path"],
                 "contact_sheet_html_asset_id": first["html_asset_id"],
                 "contact_sheet_html_path": first["html_path"]})
    row, where = _store(work, work.log.path, "run_log", {"role": "run_log"})
    made["run_log_asset_id"], made["run_log_path"] = row["id"], where
    _place(Path(where), results / "run.jsonl")
    (results / "README.txt").write_text(f"Results of run {work.run_id}, made {format_ts(utcnow())}. Open "
                                        "contact_sheet.html; each <job>/final.png is the chosen image.\n")
    made["results_dir"] = str(results)
    return made


def _store(work: _RunWork, path: Path, kind: str, metadata: dict) -> tuple[dict, str]:
    """A file the run made, stored as an asset of the run (the working file goes: the asset is the copy kept)."""
    staged = files.stage_file(work.handle.root, path)
    row = write_with_files(work.handle, [staged], lambda: assets_repo.insert_asset(
        work.handle.id, kind, staged.stored, {"run_id": work.run_id, "file_name": path.name, **metadata}, utcnow()))
    path.unlink()
    return row, str(files.abs_path(work.handle.root, staged.stored.rel_uri))


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
            # The final's thumbnail is drawn from the image it was upscaled from: the same picture, a quarter of
            # the pixels to decode at 2x.
            shown = next((a["asset_id"] for a, b in zip(made, made[1:]) if b["step"] == "upscale"
                          and b["asset_id"] == cand["final_asset_id"]), cand["final_asset_id"])
            final = assets.get(shown) if shown else None
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


def _fetch_missing(work: _RunWork, assets) -> None:
    lacking = [a["storage_uri"] for a in assets if not files.abs_path(work.handle.root, a["storage_uri"]).exists()]
    if lacking:
        work._sync("pull_paths", lacking)


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _images(candidate: dict) -> list[dict]:
    """Every image a candidate made: its chain of steps, then the masks of its cut-outs."""
    meta = candidate["meta_json"]
    return meta.get("assets", []) + meta.get("masks", [])


def _place_results(folder: Path, jobs: list[dict], candidates: list[dict], reports: dict, assets: dict,
                   root: Path) -> set[str]:
    """Each image of the jobs' candidates with its JSON sidecar, and each job's final.png; returns the ids of the
    assets whose files are not here (made on another workstation)."""
    missing: set[str] = set()
    by_job: dict[str, list[dict]] = {}
    for cand in candidates:
        by_job.setdefault(cand["job_id"], []).append(cand)
    for job in jobs:
        for cand in by_job.get(job["id"], []):
            report = reports.get(cand["id"])
            for item in _images(cand):
                asset = assets[item["asset_id"]]
                stem = folder / job["job_key"] / f"c{cand['candidate_index']}-{item['step']}"
                src = files.abs_path(root, asset["storage_uri"])
                if not src.exists():
                    missing.add(asset["id"])
                    continue
                _place(src, stem.with_suffix(".png"))
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
            src = files.abs_path(root, final["storage_uri"])
            if src.exists():
                _place(src, folder / job["job_key"] / "final.png")
            else:
                missing.add(final["id"])
    return missing
