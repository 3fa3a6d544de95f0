#!/usr/bin/env python3
"""Pipeline benchmarks, each against a reference measured in the same run.

    .venv/bin/python scripts/bench/pipeline.py [--candidates N] [--strict] [--only overhead|memory]

1. Orchestration overhead per candidate. A provider that returns one fixed image at once (so the provider costs
   nothing), every stage on (style lock, light/time, weather/effects, advanced), a cut-out, colour correction,
   2x upscale and the QA guard: a run of N candidates through runs.start and the runner (one runner thread),
   from the call to run.finished, against the same image operations called directly in a loop on the same image
   (the key engine through the chain, colour correction, the Lanczos engine, the QA guard), N times. What the
   difference pays for: rows, links, reports, audit, files in the content store, events, the run log, ranking,
   the contact sheet and the results folder. Target: ratio <= 1.2x.
2. Memory: peak resident memory of a process that runs 500 candidates (100 shots x 5), against one that runs 50
   (10 shots x 5): runs of one shape that differ in length, same settings, each in its own fresh process.
   Target: ratio <= 1.2x. (The end of a run renders its contact sheet one page of eight shots at a time, so a
   longer run adds pages, not memory.)

A report: exit code 0 whatever the results, unless --strict (1 on a miss). Temporary folders only.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchenv import VENV_PY, ensure_venv  # noqa: E402 - beside this script
SIZE = (384, 256)
STAGES = ["style_lock", "light_time", "weather_effects", "advanced"]


def fixed_png() -> bytes:
    """One preview render, the image every stage returns."""
    from iat.providers.base import GenerateRequest
    from iat.providers.preview import PreviewProvider

    request = GenerateRequest(mode="text2img", stage="style_lock", prompt="x", width=SIZE[0], height=SIZE[1], seed=1,
                              params={"cutout": True},
                              scene={"text": "a figure", "characters": [{"code": "mira", "name": "Mira",
                                                                         "palette": ["#c0392b", "#85c1e9"]}]})
    return PreviewProvider().generate(request).image


def fixed_provider(png: bytes):
    """A provider that returns the same image for every request at once: the provider costs nothing."""
    from iat.providers.base import BaseProvider, GenerateResult

    class FixedProvider(BaseProvider):
        code = "fixed"
        model = "fixed"

        def probe(self, account, *, timeout):
            return {}

        def generate(self, request, account=None, *, cancel=None, timeout=None):
            return GenerateResult(png, request.seed or 0, "fixed", SIZE[0], SIZE[1], {"units": 0, "cost_usd": 0})

    return FixedProvider()


def run_pipeline(home: Path, shots: int, per_shot: int) -> float:
    """Seconds from runs.start to run.finished for shots x per_shot candidates."""
    from iat.app import App
    from iat.context import Session
    from iat.rpc.protocol import Dispatcher
    from iat.settings import Settings

    app = App(Settings.from_env({}, home=home, runner_threads=1))
    app.providers.register("fixed", fixed_provider(fixed_png()))
    call = Dispatcher(app).call
    session = Session("bench", authenticated=True)
    call("projects.create", {"slug": "bench", "name": "Bench"}, session)
    call("style_guides.create", {"slug": "bench", "name": "small", "rules_json": {
        "size": {"width": SIZE[0], "height": SIZE[1]}}}, session)
    finished = threading.Event()
    app.events.subscribe(lambda name, payload: finished.set() if name == "run.finished" else None)
    shot_list = [{"job_key": f"s{i}", "scene": f"scene {i}", "cutout": True} for i in range(shots)]
    started = time.perf_counter()
    call("runs.start", {"slug": "bench", "shots": shot_list, "candidates": per_shot, "stages": STAGES,
                        "provider": "fixed", "upscale_factor": 2, "seed": 1}, session)
    finished.wait()
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def run_direct(workdir: Path, n: int) -> float:
    """The same image operations, called directly in a loop: what a candidate costs without the orchestration."""
    from iat.engines import default_engines
    from iat.engines.chain import remove_background
    from iat.imaging.color import ColorCorrection, correct_colors
    from iat.imaging.io import open_image, png_bytes
    from iat.imaging.quality import check_image
    from iat.knowledge.rules import StyleRules
    from iat.plugins import LazyRegistry

    engines = LazyRegistry("engine", default_engines())
    rules = StyleRules()
    png = fixed_png()
    src = workdir / "src.png"
    src.write_bytes(png)
    started = time.perf_counter()
    for _ in range(n):
        for _stage in STAGES:  # what the runner does with each provider output: it reads its bytes
            io.BytesIO(png).getvalue()
        cut = workdir / "cut.png"
        remove_background(engines, ["key"], src, cut)
        image, _ = correct_colors(open_image(cut), ColorCorrection(palette=list(rules.palette),
                                                                   max_chroma=rules.max_chroma))
        colored = workdir / "color.png"
        colored.write_bytes(png_bytes(image))
        up = workdir / "up.png"
        engines.get("lanczos").process(colored, up, {"factor": 2})
        check_image(up.read_bytes(), thresholds=rules.qa, expected_size=(SIZE[0] * 2, SIZE[1] * 2),
                    require_transparency=True, palette=list(rules.palette), max_chroma=rules.max_chroma,
                    time_of_day="day")
    return time.perf_counter() - started


def child(shots: int, per_shot: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="iat-bench-mem-"))
    try:
        seconds = run_pipeline(home, shots, per_shot)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def overhead(n: int, rounds: int = 3) -> dict:
    """Alternating rounds; the medians compared. N candidates as N/5 shots of 5."""
    shots = max(1, n // 5)
    pipe, direct = [], []
    for _ in range(rounds):
        tmp = Path(tempfile.mkdtemp(prefix="iat-bench-over-"))
        try:
            pipe.append(run_pipeline(tmp / "home", shots, 5))
            direct.append(run_direct(tmp, shots * 5))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    per_pipe, per_direct = statistics.median(pipe), statistics.median(direct)
    return {"pipeline_s": round(per_pipe, 3), "direct_s": round(per_direct, 3),
            "ratio": round(per_pipe / per_direct, 3), "target": 1.2, "candidates": shots * 5}


def memory() -> dict:
    out = {}
    for label, shots in (("small", 10), ("large", 100)):
        proc = subprocess.run([str(VENV_PY), __file__, "--child", str(shots), "5"], capture_output=True, text=True,
                              check=True)
        out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"candidates_small": 50, "candidates_large": 500, "peak_small_mib": round(out["small"]["peak_mib"], 1),
            "peak_large_mib": round(out["large"]["peak_mib"], 1),
            "ratio": round(out["large"]["peak_mib"] / out["small"]["peak_mib"], 3), "target": 1.2,
            "seconds_large": round(out["large"]["seconds"], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--only", action="append", choices=("overhead", "memory"))
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    sections = args.only or ["overhead", "memory"]
    missed = False
    if "overhead" in sections:
        r = overhead(args.candidates)
        ok = r["ratio"] <= r["target"]
        missed |= not ok
        print(f"orchestration overhead: {r['candidates']} candidates through the runner {r['pipeline_s']} s vs the "
              f"same image operations in a loop {r['direct_s']} s = {r['ratio']}x (target <= {r['target']}x) "
              f"{'ok' if ok else 'MISS'}")
    if "memory" in sections:
        r = memory()
        ok = r["ratio"] <= r["target"]
        missed |= not ok
        print(f"memory: peak RSS {r['peak_large_mib']} MiB for 500 candidates vs {r['peak_small_mib']} MiB for 50 "
              f"= {r['ratio']}x (target <= {r['target']}x) {'ok' if ok else 'MISS'}; the 500 took "
              f"{r['seconds_large']} s")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    ensure_venv(__file__)
    raise SystemExit(main())
