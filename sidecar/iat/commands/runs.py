"""runs.*, jobs.list, candidates.*: plan, start, follow, cancel and replay pipeline runs (SPEC 2.2, 5.4).

`runs.start` returns at once with the run id; the runner works on its own threads and reports progress as events:
`run.started`, `run.progress` (job, candidate and stage, with counts), `candidate.finished`, `job.finished`,
`run.finished`. The shot list is checked whole first: a refused one leaves no run row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from iat.commands.common import (BackgroundEngine, Page, PageParams, ProjectRef, UpscaleEngine, exactly_one_of,
                                 require_exactly_one)
from iat.errors import ConfirmationRequired, Conflict, InvalidParams
from iat.knowledge.rules import STAGES, json_integer
from iat.lazy import lazy_import
from iat.pipeline.shots import MAX_SHOTS, NO_CONTROL, Shot
from iat.registry import Result, command
from iat.rpc.openapi import PARTS_KEY

repo = lazy_import("iat.pipeline.repo")
service = lazy_import("iat.pipeline.service")

RunStatus = Literal["planned", "running", "done", "failed", "partial"]
StageName = Literal["style_lock", "light_time", "weather_effects", "advanced"]
# What the planner takes: style_lock first, then any of the others in pipeline order, each once (8 lists).
STAGE_LISTS = [["style_lock", *(s for i, s in enumerate(STAGES[1:]) if mask >> i & 1)] for mask in range(8)]
StageList = Annotated[list[StageName], Field(min_length=1, max_length=4, json_schema_extra={"enum": STAGE_LISTS})]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(json_integer)]
Candidates = Annotated[int, Field(ge=1, le=16), BeforeValidator(json_integer)]


class RunParams(ProjectRef):
    """Numbers and flags are strict (a JSON number, a JSON boolean), as the schema states them."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("shots", "shots_csv"))

    # Rules JSON Schema cannot state, checked before anything is written (invalid_params naming the shot or line):
    # job keys unique within the list, character codes naming characters of the project, CSV as described.
    shots: list[Shot] | None = Field(None, min_length=1, max_length=MAX_SHOTS, description=(
        "The shot list (job_key unique within it; characters: codes of the project's characters); or give "
        "shots_csv"))
    shots_csv: str | None = Field(None, max_length=2_000_000, pattern=NO_CONTROL, description=(
        "The shot list as CSV text with a header row naming its columns (any order; job_key and scene required): "
        "job_key, scene, characters (codes separated by ; or |), time_of_day, weather, cutout (true|false|yes|"
        "no|1|0); the rules of `shots` apply to each row, and a malformed row is refused with its line number"))
    candidates: Candidates = Field(4, strict=True, description="Candidates per shot (K)")
    stages: StageList | None = Field(None, description="Stages in pipeline order, style_lock first, each once; "
                                                       "default style_lock, light_time, weather_effects")
    provider: str = Field("preview", min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$",
                          json_schema_extra={PARTS_KEY: "provider:generate"},
                          description="Generation provider code (a provider that generates images)")
    style_guide_id: uuid.UUID | None = Field(None, description="Default: the project's default style guide, or "
                                                                "the embedded default rules")
    template_name: str = Field("default", min_length=1, max_length=200,
                               description="Name of the prompt templates to use (active version per stage)")
    seed: Seed | None = Field(None, strict=True, description="The run's seed; default: a random one, recorded in "
                                                              "the snapshot")
    background_engines: list[BackgroundEngine] | None = Field(None, min_length=1, max_length=8,
                                                 description="Background-removal engines in order, for cutout "
                                                             "shots; default: the project's setting or [\"key\"]")
    upscale_factor: Literal[2, 3, 4] | None = Field(None, description="Upscale every candidate's output; "
                                                                      "default: no upscaling")
    upscale_engine: UpscaleEngine = Field("auto", description=(
        "With upscale_factor: auto (default) is onnx_sr when an installed super-resolution model suits the "
        "factor, else lanczos (onnx_sr with no suitable model is conflict); resolved at start and recorded in the "
        "snapshot (with the model's name and sha256, so a replay runs the same model or is refused)"))
    color_correct: bool = Field(True, strict=True, description="Colour-correct toward the style guide (white "
                                                                "balance, palette, chroma clamp)")
    refine: bool = Field(False, strict=True, description=(
        "Refine each cut-out's alpha after the chain accepts it (ViTMatte when a matting model is installed, "
        "else closed-form matting; colours decontaminated at soft edges); the cut-out's mask asset is stored "
        "either way. Resolved at start and recorded in the snapshot (with the matting model's name and sha256, "
        "so a replay refines the same way or is refused)"))
    confirm_budget: bool = Field(False, strict=True, description="runs.start: go over the project's budget when "
                                                                 "the estimate exceeds what is left (otherwise "
                                                                 "confirmation_required)")

    @model_validator(mode="after")
    def _one_shot_list(self) -> RunParams:
        require_exactly_one(self, "shots", "shots_csv")
        return self


class RunRef(ProjectRef):
    run_id: uuid.UUID


class RunOut(Result):
    id: str
    project_id: str
    run_mode: Literal["dry", "run"]
    status: RunStatus
    stage: str | None
    time_of_day: str | None
    weather: str | None
    model_name: str | None
    provider_code: str | None
    settings_snapshot_json: dict
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    jobs: dict[str, int] = Field(description="Jobs per status")


class RunSummary(Result):
    id: str
    run_mode: Literal["dry", "run"]
    status: RunStatus
    provider_code: str | None
    model_name: str | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime


class RunPage(Page):
    items: list[RunSummary]


class PlanOut(Result):
    run: RunOut
    estimate: dict = Field(description="units, cost_usd, currency: what the run would cost the provider")
    jobs: list[dict] = Field(description="Per job: job_key, prompts per stage, seeds per candidate")


class RunListParams(PageParams):
    status: RunStatus | None = None


class JobOut(Result):
    id: str
    run_id: str
    job_key: str
    status: Literal["planned", "running", "done", "failed_output_guard", "failed"]
    prompt_text: str
    selected_candidate_index: int | None
    final_asset_id: str | None
    meta_json: dict
    created_at: datetime


class JobList(Result):
    items: list[JobOut]


class CandidateOut(Result):
    id: str
    job_id: str
    candidate_index: int
    status: Literal["generated", "done", "failed_output_guard", "failed"]
    output_asset_id: str | None
    final_asset_id: str | None
    rank_hard_failures: int
    rank_soft_warnings: int
    rank_avg_chroma_exceed: float
    meta_json: dict
    created_at: datetime
    report: dict | None = Field(None, description="The latest output_guard report's summary")


class CandidateList(Result):
    items: list[CandidateOut]


class CandidatesParams(ProjectRef):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("run_id", "job_id"))

    run_id: uuid.UUID | None = Field(None, description="The run's candidates; or give job_id")
    job_id: uuid.UUID | None = Field(None, description="One job's candidates; or give run_id")

    @model_validator(mode="after")
    def _one_filter(self) -> CandidatesParams:
        require_exactly_one(self, "run_id", "job_id")
        return self


class SelectParams(ProjectRef):
    candidate_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=2000, description="Why a person chose this candidate")


class SelectOut(Result):
    job: JobOut
    report_id: str


def _run_out(row: dict, counts: dict[str, int]) -> RunOut:
    return RunOut.model_validate({**row, "jobs": counts})


@command("runs.plan", params=RunParams, result=PlanOut, route=("POST", "/api/projects/{slug}/runs/plan"),
         mutating=True, errors=(InvalidParams, Conflict))
def plan(ctx, p: RunParams) -> PlanOut:
    """Plans a run without running it (mode dry): renders every prompt, estimates the cost, calls no provider."""
    row, snapshot, estimate = service.create(ctx.app, p, "dry", ctx.app.current_user()["id"])
    ctx.app.events.publish("run.planned", {"project_id": row["project_id"], "slug": p.slug, "run_id": row["id"]})
    return PlanOut(run=_run_out(row, {"planned": len(snapshot["jobs"])}), estimate=estimate,
                   jobs=[{k: j[k] for k in ("job_key", "prompts", "seeds")} for j in snapshot["jobs"]])


@command("runs.start", params=RunParams, result=RunOut, route=("POST", "/api/projects/{slug}/runs"), mutating=True,
         errors=(InvalidParams, Conflict, ConfirmationRequired))
def start(ctx, p: RunParams) -> RunOut:
    """Starts a run (mode run) and returns at once with its id; progress comes as run.* events."""
    row, snapshot, _ = service.create(ctx.app, p, "run", ctx.app.current_user()["id"])
    ctx.app.runner.submit(p.slug, row["id"])
    ctx.app.events.publish("run.queued", {"project_id": row["project_id"], "slug": p.slug, "run_id": row["id"]})
    return _run_out(row, {"planned": len(snapshot["jobs"])})


@command("runs.replay", params=RunRef, result=RunOut, route=("POST", "/api/projects/{slug}/runs/{run_id}/replay"),
         mutating=True, errors=(Conflict,))
def replay(ctx, p: RunRef) -> RunOut:
    """Runs a run again from its settings snapshot alone (same seeds, prompts, rules, provider and model, and the
    same upscale model: conflict when it is no longer installed or its file changed)."""
    row = service.replay(ctx.app, p.slug, str(p.run_id), ctx.app.current_user()["id"])
    ctx.app.runner.submit(p.slug, row["id"])
    ctx.app.events.publish("run.queued", {"project_id": row["project_id"], "slug": p.slug, "run_id": row["id"],
                                          "replay_of": str(p.run_id)})
    return _run_out(row, {"planned": len(row["settings_snapshot_json"]["jobs"])})


@command("runs.get", params=RunRef, result=RunOut, route=("GET", "/api/projects/{slug}/runs/{run_id}"))
def get(ctx, p: RunRef) -> RunOut:
    """Returns one run with its jobs counted per status."""
    handle = ctx.app.projects.open(p.slug)

    def read() -> tuple[dict, dict]:
        row = repo.get_run(handle.id, str(p.run_id))
        return row, repo.job_counts(row["id"])

    return _run_out(*handle.store.read(read))


@command("runs.list", params=RunListParams, result=RunPage, route=("GET", "/api/projects/{slug}/runs"))
def list_runs(ctx, p: RunListParams) -> RunPage:
    """Lists a project's runs newest first (filter by status); page with next_cursor."""
    handle = ctx.app.projects.open(p.slug)
    items, cursor = handle.store.read(repo.list_runs, handle.id, p.status, p.limit, p.cursor)
    return RunPage(items=items, next_cursor=cursor)


@command("runs.cancel", params=RunRef, result=RunOut, route=("POST", "/api/projects/{slug}/runs/{run_id}/cancel"),
         mutating=True, errors=(Conflict,))
def cancel(ctx, p: RunRef) -> RunOut:
    """Cancels a queued or running run: the jobs left end failed (canceled), the run partial or failed."""
    row, counts = service.cancel(ctx.app, p.slug, str(p.run_id), ctx.app.current_user()["id"])
    ctx.app.events.publish("run.canceling", {"project_id": row["project_id"], "slug": p.slug, "run_id": row["id"]})
    return _run_out(row, counts)


@command("jobs.list", params=RunRef, result=JobList, route=("GET", "/api/projects/{slug}/runs/{run_id}/jobs"))
def list_jobs(ctx, p: RunRef) -> JobList:
    """Lists a run's jobs in shot-list order."""
    return JobList(items=service.jobs(ctx.app, p.slug, str(p.run_id)))


@command("candidates.list", params=CandidatesParams, result=CandidateList,
         route=("GET", "/api/projects/{slug}/candidates"))
def list_candidates(ctx, p: CandidatesParams) -> CandidateList:
    """Lists the candidates of a run or of one job (give run_id or job_id), with their QA summaries."""
    items = service.candidates(ctx.app, p.slug, str(p.run_id) if p.run_id else None,
                               str(p.job_id) if p.job_id else None)
    return CandidateList(items=items)


@command("candidates.select", params=SelectParams, result=SelectOut,
         route=("POST", "/api/projects/{slug}/candidates/{candidate_id}/select"), mutating=True,
         errors=(Conflict,))
def select(ctx, p: SelectParams) -> SelectOut:
    """A person's choice of a job's candidate, with a reason: the job's final asset becomes its output, recorded
    as a human_review report beside the automatic ranking."""
    job, report_id = service.select(ctx.app, p.slug, str(p.candidate_id), p.reason, ctx.app.current_user()["id"])
    ctx.app.events.publish("job.selected", {"project_id": ctx.app.projects.open(p.slug).id, "slug": p.slug,
                                            "job_id": job["id"], "candidate_id": str(p.candidate_id)})
    return SelectOut(job=job, report_id=report_id)

