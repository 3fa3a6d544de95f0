#!/usr/bin/env python3
"""Tiled super-resolution against whole-frame inference with the same model and session, time and memory.

    .venv/bin/python scripts/bench/upscale.py [--side N] [--big N] [--rounds R] [--feats F] [--convs C]
                                              [--only time|memory] [--strict]

The model: an SRVGG network (the architecture of Real-ESRGAN's compact models, tests/onnx_models/srvgg.py) at 4x
with F feature channels and C inner 3x3 conv layers (default 32 and 8: 9 * (3F + C*F^2 + F*48) = 88 k
multiply-adds per input px, a receptive field of 10 px), random weights from a fixed seed, loaded with the
sidecar's own session options (iat.models.sessions: CPU, intra-op threads = cores - 1).

1. Time: a SIDE x SIDE image (default 1024) upscaled by iat.imaging.tiling.upscale_tiled with the engine's
   defaults (tile 256, overlap 16) against iat.imaging.tiling.upscale_whole (one session.run on the whole
   frame), both into a uint8 frame, on one session, alternating, R rounds; the ratio of the medians.
   Target: <= 1.3x. The largest difference between the two outputs is reported too.
2. Memory: each case runs in a fresh child process, which reports its resident set just before inference
   (VmRSS, after the session is built, the input made and the uint8 output frame written once) and the peak
   resident set during inference (VmHWM after resetting it through /proc/self/clear_refs, so the peak of the
   imports does not hide it; else getrusage's ru_maxrss): everything, onnxruntime's arena included. The
   difference is what the inference needed beyond its input and output. Cases: whole
   frame at SIDE/2 and SIDE, tiled at SIDE, and tiled at BIG (default 4096), whose whole-frame run is NOT made:
   its memory is estimated from the model's activation sizes instead (onnx shape inference at that size: the
   largest sum of a node's input and output tensors, which must all be alive while that node runs, plus the
   uint8 output frame), and the estimate is checked against the whole-frame runs that were measured.

A report: exit code 0 whatever the results, unless --strict (1 when the time target is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchenv import ROOT, VENV_PY, ensure_venv  # noqa: E402 - beside this script

SCALE = 4
TILE, OVERLAP = 256, 16   # the onnx_sr engine's defaults


def build_model(folder: Path, feats: int, convs: int) -> Path:
    from tests.onnx_models import save
    from tests.onnx_models.srvgg import srvgg

    path = folder / f"srvgg-x{SCALE}-f{feats}-c{convs}.onnx"
    if not path.exists():
        save(srvgg(SCALE, feats=feats, convs=convs), path)
    return path


def session(path: Path):
    from iat.models.sessions import inference_session

    s = inference_session(str(path), ["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return s, (lambda x: s.run(None, {name: x})[0])


def picture(side: int):
    """A smooth picture with edges (noise blurred, plus a few bands), not flat: the model's work is the same on any
    input, but the difference check wants structure."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(2, side // 16), max(2, side // 16), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)).copy()
    img[side // 3: side // 3 + side // 20] = (240, 30, 30)
    return img


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one, so that the
    peak of the inference is not hidden by an earlier one (imports, building the session)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(model: str, mode: str, side: int) -> None:
    import numpy as np

    from iat.imaging import tiling

    _, fn = session(Path(model))
    rgb = picture(side)
    out = np.empty((side * SCALE, side * SCALE, 3), np.uint8)
    out.fill(1)   # resident before the baseline is read: both sides write into a uint8 frame
    fn(tiling.to_input(rgb[:32, :32]))   # the session's first run sets up its kernels
    reset = reset_peak()
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    if mode == "whole":
        tiling.upscale_whole(rgb, fn, SCALE, out=out)
    else:
        tiling.upscale_tiled(rgb, fn, SCALE, tile=TILE, overlap=OVERLAP, out=out)
    seconds = time.perf_counter() - started
    peak = status_bytes("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "side": side, "before": before, "peak": peak, "seconds": seconds,
                      "output": out.nbytes}))


def measure(model: Path, mode: str, side: int) -> dict:
    proc = subprocess.run([str(VENV_PY), __file__, "--child", str(model), mode, str(side)], capture_output=True,
                          text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def activation_estimate(model: Path, side: int) -> int:
    """Bytes: the largest sum of one node's input and output activations at side x side (see the docstring)."""
    import numpy as np
    import onnx
    from onnx import shape_inference

    proto = onnx.load(str(model))
    for dim, value in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], (side, side)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(proto)
    sizes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        sizes[info.name] = int(np.prod(dims)) * 4 if dims and all(dims) else 0
    return max(sum(sizes.get(t, 0) for t in [*node.input, *node.output]) for node in inferred.graph.node)


def timing(model: Path, side: int, rounds: int) -> dict:
    import numpy as np

    from iat.imaging import tiling

    _, fn = session(model)
    rgb = picture(side)
    tiled_out = np.empty((side * SCALE, side * SCALE, 3), np.uint8)
    whole_out = np.empty_like(tiled_out)
    tiling.upscale_tiled(rgb[:300, :300], fn, SCALE, tile=TILE, overlap=OVERLAP)   # warm-up
    whole, tiled = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        tiling.upscale_whole(rgb, fn, SCALE, out=whole_out)
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        tiling.upscale_tiled(rgb, fn, SCALE, tile=TILE, overlap=OVERLAP, out=tiled_out)
        tiled.append(time.perf_counter() - started)
    diff = np.abs(tiled_out.astype(np.int16) - whole_out)
    return {"whole_s": statistics.median(whole), "tiled_s": statistics.median(tiled),
            "ratio": statistics.median(tiled) / statistics.median(whole), "max_diff": int(diff.max()),
            "mean_diff": float(diff.mean()), "tiles": tiling.tile_count(side, side, TILE),
            # the model's work on tiles against the frame: each tile's context is computed twice
            "area": sum(s.hi - s.lo for s in tiling.spans(side, TILE, OVERLAP, SCALE)) ** 2 / side ** 2}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--big", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--feats", type=int, default=32)
    parser.add_argument("--convs", type=int, default=8)
    parser.add_argument("--only", action="append", choices=("time", "memory"))
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    with tempfile.TemporaryDirectory(prefix="iat-bench-upscale-") as tmp:
        model = build_model(Path(tmp), args.feats, args.convs)
        macs = 9 * (3 * args.feats + args.convs * args.feats ** 2 + args.feats * 3 * SCALE ** 2)
        print(f"model: SRVGG x{SCALE}, {args.feats} channels, {args.convs} inner conv layers, {macs / 1e3:.0f} k "
              f"multiply-adds per input px; tile {TILE}, overlap {OVERLAP}; {os.cpu_count()} cores")
        sections = args.only or ["time", "memory"]
        ok = True
        if "time" in sections:
            t = timing(model, args.side, args.rounds)
            ok = t["ratio"] <= 1.3
            print(f"time, {args.side}x{args.side} at {SCALE}x: tiled ({t['tiles']} tiles) {t['tiled_s']:.2f} s vs "
                  f"whole frame {t['whole_s']:.2f} s = {t['ratio']:.2f}x (target <= 1.3x) {'ok' if ok else 'MISS'}; "
                  f"tiles cover {t['area']:.2f}x the frame's px with their context; outputs differ by at most "
                  f"{t['max_diff']} levels (mean {t['mean_diff']:.4f})")
        if "memory" in sections:
            runs = [measure(model, "whole", args.side // 2), measure(model, "whole", args.side),
                    measure(model, "tiled", args.side), measure(model, "tiled", args.big)]
            for r in runs:
                extra = r["peak"] - r["before"]
                line = (f"memory, {r['mode']} {r['side']}x{r['side']}: peak RSS {mib(r['peak'])}, "
                        f"{mib(extra)} above the RSS before inference (input, session and the uint8 output frame, "
                        f"{mib(r['output'])}, already resident)")
                if r["mode"] == "whole":
                    est = activation_estimate(model, r["side"])
                    line += f"; activation estimate {mib(est)}, measured/estimate {extra / est:.2f}"
                print(line + f"; {r['seconds']:.1f} s")
            big = runs[-1]
            est = activation_estimate(model, args.big)
            measured = [r for r in runs if r["mode"] == "whole"]
            factor = max((r["peak"] - r["before"]) / activation_estimate(model, r["side"]) for r in measured)
            print(f"memory, {args.big}x{args.big}: tiled needs {mib(big['peak'] - big['before'])} beyond the output; "
                  f"whole frame would need >= {mib(est)} of activations (estimate; {mib(est * factor)} at the "
                  f"measured/estimate ratio above), {(est / max(1, big['peak'] - big['before'])):.0f}x more; "
                  f"whole-frame peak RSS would be >= {mib(big['before'] + est)}, tiled was {mib(big['peak'])}")
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    ensure_venv(__file__)
    raise SystemExit(main())
