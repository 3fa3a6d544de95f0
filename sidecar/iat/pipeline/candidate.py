"""One candidate's work, from its seed to its checked output: the generation stages (style lock -> light/time ->
weather/effects -> advanced, each an img2img on the one before), then background removal when the shot asks for a
cutout, upscaling, colour correction toward the style guide, and the QA guard. Files only: the runner registers
what this returns in one write transaction.

Every step is a function of the snapshot, the job and the candidate's seed, so a candidate redone after a crash,
or replayed, yields the same bytes. Each PNG carries the recipe in text chunks (run, job, candidate, stage, seed,
prompt), the same for a replay: `iat:run` names the run whose recipe it is (the snapshot's origin_run_id).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from iat.imaging.pngtext import add_text
from iat.pipeline import planner
from iat.providers.base import GenerateRequest, GenerateResult

Progress = Callable[[str], None]  # called with the step name as each step starts
Generate = Callable[[GenerateRequest, "threading.Event | None"], GenerateResult]


@dataclass
class Output:
    """One image the candidate made; `parent` is the index of the output it was made from (None: none), `link`
    how it relates to it: derived_from along the chain of steps, mask_for a cut-out's mask (kept beside the chain,
    after the final, linked to the image it was cut from)."""

    kind: str  # generated | bg_removed | upscaled | final | mask
    step: str  # a stage name, or cutout | upscale | color | mask
    data: bytes
    parent: int | None
    meta: dict[str, Any] = field(default_factory=dict)
    link: str = "derived_from"


@dataclass
class CandidateWork:
    index: int
    seed: int
    outputs: list[Output]
    output_index: int  # the last generation stage's output (run_candidates.output_asset_id)
    final_index: int  # what the QA guard judged and ranking chooses among (run_candidates.final_asset_id)
    qa: dict  # the QA report: checks, hard_failures, soft_warnings, avg_chroma_exceed, quality_score, phash
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tools:
    """The App's parts a candidate uses (given, so this module needs no App). `generate` is the run's provider
    called through the ledger (retries, limits, budget, cost recorded)."""

    provider_code: str
    generate: Generate
    engines: Any  # iat.plugins.LazyRegistry of image engines
    engine_ctx: Any = None  # iat.engines.base.EngineContext: the App, the project and the run, for engines


def run_candidate(snapshot: dict, job: dict, index: int, tools: Tools, workdir: Path, *,
                  cancel: threading.Event | None = None, progress: Progress | None = None) -> CandidateWork:
    from iat.pipeline import post

    seed = job["seeds"][index]
    shot = job["shot"]
    width, height = planner.output_size(snapshot)
    scene = planner.scene_of(snapshot, job)
    recipe = {"iat:run": snapshot["origin_run_id"], "iat:job": job["job_key"], "iat:candidate": str(index),
              "iat:seed": str(seed)}
    outputs: list[Output] = []
    previous: bytes | None = None
    stages_meta = []
    for stage in snapshot["stages"]:
        if progress:
            progress(stage)
        params = {**planner.stage_params(snapshot, stage), "cutout": shot["cutout"]}
        request = GenerateRequest(mode="img2img" if previous else "text2img", stage=stage,
                                  prompt=job["prompts"][stage], negative_prompt=job["negative_prompt"],
                                  width=width, height=height, seed=seed, init_image=previous, params=params,
                                  scene=scene)
        result = tools.generate(request, cancel)
        previous = result.image
        meta = {"stage": stage, "seed": result.seed, "model": result.model, "params": params,
                "prompt": job["prompts"][stage], "usage": result.usage}
        stages_meta.append(meta)
        png = add_text(result.image, {**recipe, "iat:stage": stage, "iat:prompt": job["prompts"][stage],
                                      "iat:model": result.model})
        outputs.append(Output("generated", stage, png, len(outputs) - 1 if outputs else None, meta))
    output_index = len(outputs) - 1
    steps = post.post_process(snapshot, shot, outputs[-1].data, tools.engines, workdir, cancel=cancel,
                              progress=progress, ctx=tools.engine_ctx)
    for step in steps:
        png = add_text(step.data, {**recipe, "iat:stage": step.step})
        outputs.append(Output(step.kind, step.step, png, len(outputs) - 1, step.meta))
    final_index = len(outputs) - 1
    for i, step in enumerate(steps):
        if step.mask is not None:
            cut_from = outputs[output_index + 1 + i].parent
            outputs.append(Output("mask", "mask", add_text(step.mask, {**recipe, "iat:stage": "mask"}), cut_from,
                                  {"engine": step.meta.get("engine"),
                                   "refined": bool((step.meta.get("refine") or {}).get("ok"))}, link="mask_for"))
    if progress:
        progress("qa")
    qa = post.quality(snapshot, shot, outputs[final_index].data)
    cost = sum(float(m["usage"].get("cost_usd", 0) or 0) for m in stages_meta)
    return CandidateWork(index=index, seed=seed, outputs=outputs, output_index=output_index, final_index=final_index,
                         qa=qa, meta={"seed": seed, "provider": tools.provider_code, "model": stages_meta[-1]["model"],
                                      "cost_usd": round(cost, 6), "stages": stages_meta,
                                      "post": [{"step": s.step, **s.meta} for s in steps]})
