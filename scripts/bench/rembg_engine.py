#!/usr/bin/env python3
"""Background removal with the `rembg` engine, against rembg's own CLI and against a bare onnxruntime loop.

    .venv/bin/python scripts/bench/rembg_engine.py [--images N] [--side PX] [--cli-images N] [--strict] [--json FILE]

The model: a u2net-shaped test model (tests/onnx_models/segmentation.py `u2net(hidden=32, layers=4)`): input
[1, 3, 320, 320], seven [1, 1, 320, 320] outputs, a 1x1 feature convolution then four 3x3 convolutions of 32
channels at 320x320 (~6 GFLOP, 3 GMAC, per image; about 85 ms on one idle core here) that really
segments the benchmark's scenes (a saturated figure on a grey backdrop, 1024x1024). One model file, installed in
a fresh app's models folder, serves all three sides:

1. the engine: `iat.engines.chain.remove_background(["rembg"])` in process, the engine's cached session (built
   on a warm-up image first), the chain's mask check included; per image, from the call to the PNG on disk.
2. the CLI: `rembg i -m u2net_custom -x '{"model_path": <that file>}' in.png out.png`, a new process per image,
   REMBG_HOME and U2NET_HOME set to the models folder so rembg accepts the path (it refuses paths outside its
   home) and OMP_NUM_THREADS set to the engine's intra-op thread count (rembg's new_session reads it) so both
   run inference on as many threads. Target: engine >= 20x faster per image.
3. the floor: a bare loop of onnxruntime inference on the same file with the sidecar's session options, and the
   same pre- and post-processing written out in the loop: decode, RGB, LANCZOS to 320, scale by the maximum,
   ImageNet mean/std, inference, min-max of output 0, LANCZOS back, RGBA with the mask as alpha, PNG at the
   sidecar's compression level, written. Target: engine <= 1.5x the floor.

The three sides alternate per image (engine, floor, CLI on image i). Every output's mask is compared with the
scene's ground truth, and the engine's with the CLI's (same model, same processing: they must agree). Also
reported: the engine's time split (the chain's source check, decode, rembg's predict, compose and PNG, the mask
check) on the same images, and the packages `rembg i` imports. A report: exit code 0 whatever the results,
unless --strict (1 when a target is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchenv import VENV, ensure_venv  # noqa: E402 - beside this script

HIDDEN, LAYERS = 32, 4
MEAN, STD, SIDE = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 320

CLI_IMPORTS = r"""
import json, sys
before = set(sys.modules)
sys.argv = ["rembg"] + sys.argv[1:]
from rembg.cli import main
try:
    main()
except SystemExit:
    pass
top = {m.split(".")[0] for m in set(sys.modules) - before}
print(json.dumps(sorted(m for m in top if m not in sys.stdlib_module_names and not m.startswith("_"))),
      file=sys.stderr)
"""


def floor_loop(session, src: Path, dst: Path) -> "np.ndarray":
    """The same work as the engine, written out: what onnxruntime inference plus rembg's processing costs."""
    import numpy as np
    from PIL import Image

    from iat.imaging.io import save_png

    img = Image.open(src)
    img.load()
    rgb = img.convert("RGB")
    small = np.asarray(rgb.resize((SIDE, SIDE), Image.Resampling.LANCZOS))
    x = small / max(np.max(small), 1e-6)
    x = ((x - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    pred = session.run(None, {session.get_inputs()[0].name: x})[0][0, 0]
    pred = (pred - pred.min()) / (pred.max() - pred.min())
    mask = Image.fromarray((pred * 255).astype(np.uint8), "L").resize(rgb.size, Image.Resampling.LANCZOS)
    alpha = np.asarray(mask)
    out = np.asarray(rgb).copy()
    out[alpha == 0] = 0
    save_png(Image.fromarray(np.dstack([out, alpha]), "RGBA"), dst)
    return alpha


def alpha_of(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA"))[..., 3]


def main() -> int:
    ensure_venv(__file__)
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--cli-images", type=int, default=None, help="how many of the images also go through the "
                        "CLI (default: all)")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cli_n = args.images if args.cli_images is None else min(args.cli_images, args.images)

    import numpy as np
    from PIL import Image

    from iat.app import App
    from iat.engines.base import EngineContext
    from iat.engines.chain import remove_background
    from iat.engines.mask_check import check_mask
    from iat.imaging.io import from_arrays, open_image, png_bytes, to_arrays
    from iat.models.sessions import execution_providers, inference_session, intra_op_threads
    from iat.settings import Settings
    from tests.onnx_models import install
    from tests.onnx_models import segmentation as seg

    rembg_cli = VENV / "bin" / "rembg"
    if not rembg_cli.exists():
        print("rembg's CLI is not installed in the venv (pip install -e '.[test]')", file=sys.stderr)
        return 1
    rows: dict[str, list[float]] = {"engine": [], "floor": [], "cli": []}
    split: dict[str, list[float]] = {k: [] for k in ("source_check", "decode", "predict", "compose_png", "write",
                                                     "mask_check")}
    quality: dict[str, list[float]] = {"engine_vs_truth": [], "floor_vs_truth": [], "cli_vs_truth": [],
                                       "engine_vs_cli": []}
    with tempfile.TemporaryDirectory(prefix="iat-bench-rembg-") as tmp:
        tmp = Path(tmp)
        app = App(Settings.from_env({}, home=tmp / "home"))
        model = install(app.models, seg.u2net(hidden=HIDDEN, layers=LAYERS), "bench-u2net", "segmentation", tmp,
                        arch="u2net")
        images, truths = [], []
        for i in range(args.images + 1):
            rgb, truth = seg.scene(50_000 + i, args.side, args.side)
            path = tmp / f"in-{i:03d}.png"
            Image.fromarray(rgb).save(path)
            images.append(path)
            truths.append(truth)
        warm, images, truths = images[0], images[1:], truths[1:]
        ctx = EngineContext(app)
        started = time.perf_counter()
        remove_background(app.engines, ["rembg"], warm, tmp / "warm.png", ctx=ctx)
        cold = time.perf_counter() - started
        floor_session = inference_session(str(model.path), execution_providers())
        floor_loop(floor_session, warm, tmp / "warm-floor.png")
        env = {**os.environ, "REMBG_HOME": str(model.path.parent), "U2NET_HOME": str(model.path.parent),
               "OMP_NUM_THREADS": str(intra_op_threads())}
        cli = [str(rembg_cli), "i", "-m", "u2net_custom", "-x", json.dumps({"model_path": str(model.path)})]
        builds = app.models.sessions.builds
        engine = app.engines.get("rembg")
        session = engine.session(ctx, model)

        for i, (src, truth) in enumerate(zip(images, truths)):
            out = tmp / f"engine-{i:03d}.png"
            t0 = time.perf_counter()
            result = remove_background(app.engines, ["rembg"], src, out, ctx=ctx)
            rows["engine"].append(time.perf_counter() - t0)
            assert result.engine == "rembg", result.attempts
            engine_alpha = alpha_of(out) >= 128
            quality["engine_vs_truth"].append(seg.iou(engine_alpha, truth))

            t0 = time.perf_counter()
            floor_alpha = floor_loop(floor_session, src, tmp / f"floor-{i:03d}.png")
            rows["floor"].append(time.perf_counter() - t0)
            quality["floor_vs_truth"].append(seg.iou(floor_alpha >= 128, truth))

            if i < cli_n:
                cli_out = tmp / f"cli-{i:03d}.png"
                t0 = time.perf_counter()
                done = subprocess.run([*cli, str(src), str(cli_out)], env=env, capture_output=True, text=True)
                rows["cli"].append(time.perf_counter() - t0)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                cli_alpha = alpha_of(cli_out) >= 128
                quality["cli_vs_truth"].append(seg.iou(cli_alpha, truth))
                quality["engine_vs_cli"].append(seg.iou(engine_alpha, cli_alpha))

            # Where the engine's time goes, step by step on the same image (not part of the ratios).
            def step(name, fn):
                t = time.perf_counter()
                value = fn()
                split[name].append(time.perf_counter() - t)
                return value

            step("source_check", lambda: open_image(src))
            rgb, _ = step("decode", lambda: to_arrays(open_image(src)))
            mask = step("predict", lambda: np.asarray(session.predict(Image.fromarray(rgb, "RGB"))[0]))
            data = step("compose_png", lambda: png_bytes(from_arrays(np.where(mask[..., None] > 0, rgb, 0), mask)))
            step("write", lambda: (tmp / "split.png").write_bytes(data))
            step("mask_check", lambda: check_mask(tmp / "split.png"))
            for path in (out, tmp / f"floor-{i:03d}.png", tmp / f"cli-{i:03d}.png"):
                path.unlink(missing_ok=True)
        assert app.models.sessions.builds == builds, "the engine built a second session"
        session_builds = app.models.sessions.builds

        imports = subprocess.run([str(VENV / "bin" / "python"), "-c", CLI_IMPORTS, "i", "-m", "u2net_custom", "-x",
                                  json.dumps({"model_path": str(model.path)}), str(images[0]), str(tmp / "x.png")],
                                 env=env, capture_output=True, text=True)
        try:
            cli_packages = json.loads(imports.stderr.strip().splitlines()[-1])
        except (ValueError, IndexError):
            cli_packages = ["?"]
        app.close()

    med = {k: statistics.median(v) for k, v in rows.items() if v}
    cli_ratio = med["cli"] / med["engine"]
    floor_ratio = med["engine"] / med["floor"]
    ok_cli, ok_floor = cli_ratio >= 20, floor_ratio <= 1.5
    print(f"model: u2net-shaped, {HIDDEN} channels x {LAYERS} 3x3 layers at {SIDE}x{SIDE}; {args.images} images of "
          f"{args.side}x{args.side}; {os.cpu_count()} CPUs, {intra_op_threads()} inference thread(s); "
          f"providers {execution_providers()}")
    print(f"engine (chain, cached session): median {med['engine'] * 1e3:.0f} ms per image "
          f"(first image with the session build: {cold * 1e3:.0f} ms; session builds after warm-up: "
          f"{session_builds - builds})")
    print(f"vs rembg i, a process per image ({len(rows['cli'])} images): median {med['cli'] * 1e3:.0f} ms = "
          f"{cli_ratio:.1f}x faster (target >= 20x) {'ok' if ok_cli else 'MISS'}")
    print(f"vs the floor (bare onnxruntime loop, same processing): median {med['floor'] * 1e3:.0f} ms = "
          f"{floor_ratio:.2f}x (target <= 1.5x) {'ok' if ok_floor else 'MISS'}")
    parts = {k: statistics.median(v) * 1e3 for k, v in split.items()}
    print("engine's steps (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    print("mask IoU, median (min): " + ", ".join(f"{k} {statistics.median(v):.3f} ({min(v):.3f})"
                                                  for k, v in quality.items() if v))
    print(f"packages `rembg i` imports: {', '.join(cli_packages)}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
          + ("  (busy machine: rerun before trusting a miss)" if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
             else ""))
    if args.json:
        args.json.write_text(json.dumps({"median_s": med, "cli_ratio": cli_ratio, "floor_ratio": floor_ratio,
                                         "steps_ms": parts, "cold_s": cold, "cli_packages": cli_packages,
                                         "iou": {k: statistics.median(v) for k, v in quality.items() if v}},
                                        indent=2))
    return 1 if args.strict and not (ok_cli and ok_floor) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
