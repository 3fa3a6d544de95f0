"""A candidate's post-processing and QA, as the run's snapshot asks: background removal through the engine chain
(cutout shots; refined when the snapshot records `refine`, its alpha kept as a mask), colour correction toward the
style guide, upscaling (after the correction: a quarter of the pixels to correct at 2x), then the QA guard on the
result. The last step's output is the candidate's `final`. Near-duplicates are judged per job, once every sibling
is in (so the verdict does not depend on which finished first).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from iat.engines.chain import remove_background
from iat.engines.refine import mask_png
from iat.imaging.color import ColorCorrection, correct_colors
from iat.imaging.io import open_image, png_bytes
from iat.imaging.phash import hamming
from iat.imaging.quality import check_image
from iat.knowledge.rules import parse_rules
from iat.pipeline import planner


@dataclass
class Step:
    kind: str  # the asset kind of its output
    step: str
    data: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    mask: bytes | None = None  # the cut-out step: its alpha as a grayscale PNG (a `mask` asset beside the chain)


def post_process(snapshot: dict, shot: dict, png: bytes, engines, workdir: Path, *,
                 cancel: threading.Event | None = None,
                 progress: Callable[[str], None] | None = None, ctx=None) -> list[Step]:
    """The post-processing steps of one candidate; `ctx` (iat.engines.base.EngineContext) goes to every engine."""
    post = snapshot["post"]
    rules = parse_rules(snapshot["style_guide"]["rules_json"])
    steps: list[Step] = []
    current = workdir / "current.png"
    current.write_bytes(png)
    if shot["cutout"]:
        if progress:
            progress("cutout")
        out = workdir / "cutout.png"
        refine = _refine_options(post.get("refine"))
        result = remove_background(engines, post["background_engines"], current, out, cancel=cancel, ctx=ctx,
                                   refine=refine)
        meta = {"engine": result.engine, "attempts": [a.to_dict() for a in result.attempts]}
        if result.refine is not None:
            meta["refine"] = result.refine.to_dict()
        steps.append(Step("bg_removed", "cutout", out.read_bytes(), meta, mask=mask_png(out)))
        current = out
    if post.get("color_correct", True):
        if progress:
            progress("color")
        options = ColorCorrection(palette=list(rules.palette), max_chroma=rules.max_chroma)
        image, facts = correct_colors(open_image(current), options)
        out = workdir / "color.png"
        out.write_bytes(png_bytes(image))
        steps.append(Step("generated", "color", out.read_bytes(), {"correction": options.model_dump(), **facts}))
        current = out
    if post.get("upscale_factor"):
        if progress:
            progress("upscale")
        out = workdir / "upscaled.png"
        # The engine resolved at runs.start (snapshots from before the choice: lanczos); a model is pinned by sha256.
        code = post.get("upscale_engine") or "lanczos"
        options = {"factor": post["upscale_factor"]}
        if post.get("upscale_model"):
            options.update(model=post["upscale_model"], sha256=post["upscale_model_sha256"])
        result = engines.get(code).process(current, out, options, cancel=cancel, ctx=ctx)
        steps.append(Step("upscaled", "upscale", out.read_bytes(),
                          {"engine": code, "factor": post["upscale_factor"], **result.meta}))
        current = out
    if steps:
        steps[-1].kind = "final"  # the candidate's output: what QA judges and ranking chooses among
    return steps


def _refine_options(recorded: Any) -> dict | None:
    """The chain's refine options from the snapshot's record (iat.engines.refine.record; none: no refinement):
    the recorded model is pinned by its sha256."""
    if not recorded:
        return None
    return dict(recorded) if isinstance(recorded, dict) else {}


def quality(snapshot: dict, shot: dict, png: bytes) -> dict:
    """The QA guard's report on a candidate's output: what the run expects of it, from the snapshot alone."""
    rules = parse_rules(snapshot["style_guide"]["rules_json"])
    width, height = planner.output_size(snapshot)
    factor = snapshot["post"].get("upscale_factor") or 1
    report = check_image(png, thresholds=rules.qa, expected_size=(width * factor, height * factor),
                         require_transparency=shot["cutout"], palette=list(rules.palette) or None,
                         max_chroma=rules.max_chroma, time_of_day=shot["time_of_day"])
    return {"checks": report.checks, "hard_failures": report.hard_failures, "soft_warnings": report.soft_warnings,
            "avg_chroma_exceed": report.chroma_exceedance, "quality_score": report.quality_score,
            "phash": report.phash, "width": report.width, "height": report.height}


def mark_near_duplicates(items: list[tuple[dict, dict]], max_distance: int) -> list[tuple[dict, dict]]:
    """Adds the `duplicate` soft check to each candidate's QA summary: a candidate whose pHash is within
    `max_distance` of a lower-index sibling's is a near-duplicate of it. Returns (candidate, new summary)."""
    ordered = sorted(items, key=lambda item: item[0]["candidate_index"])
    out = []
    for i, (cand, summary) in enumerate(ordered):
        earlier = [(c["candidate_index"], s["phash"]) for c, s in ordered[:i] if s.get("phash")]
        checks = [c for c in summary["checks"] if c["name"] != "duplicate"]
        soft = summary["soft_warnings"] - sum(1 for c in summary["checks"]
                                              if c["name"] == "duplicate" and not c["passed"])
        if summary.get("phash") and earlier:
            nearest, distance = min(((idx, hamming(summary["phash"], h)) for idx, h in earlier), key=lambda x: x[1])
            passed = distance > max_distance
            checks.append({"name": "duplicate", "value": float(distance), "threshold": max_distance,
                           "severity": "soft", "passed": passed,
                           "message": f"pHash distance {distance} to candidate {nearest}"})
            soft += 0 if passed else 1
        out.append((cand, {**summary, "checks": checks, "soft_warnings": soft}))
    return out
