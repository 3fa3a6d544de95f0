#!/usr/bin/env python3
"""exports.create (tar.gz) against `tar czf` of the same project folder.

    .venv/bin/python scripts/bench/export.py [--pictures N] [--rounds R] [--strict]

The project: N pictures (default 400, 256x256 PNGs of noisy gradients, ~100-200 KB each: already compressed, as a
project's images are) brought in with assets.import, plus a finished preview run (its derived images, JSON
sidecars, contact sheet and run log), in a fresh IAT_HOME.

1. Time: `exports.create` format tar.gz called in process through the dispatcher (database snapshot with the
   backup API, VACUUM, every file hashed while it streams into the archive at gzip level 6, the manifest, the
   rows), alternating with `tar czf` of the same project folder (GNU tar piping through gzip at its default level
   6; exports/ excluded, as the export leaves it out), R rounds after a warm-up each, warm page cache; the ratio
   of the medians. Target: <= 1.2x.
2. Reported (no target): exports.create zip (PNGs stored, the rest deflated) and folder, and exports.import of the
   tar.gz into a fresh home.

A report: exit code 0 whatever the results, unless --strict (1 when the target is missed).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchenv import ROOT, ensure_venv  # noqa: E402 - beside this script

TARGET = 1.2


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def pictures(folder: Path, n: int) -> int:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:256, 0:256]
    total = 0
    for i in range(n):
        base = np.dstack([(xx + i) % 256, (yy * 2 + i) % 256, (xx + yy) % 256]).astype(np.int16)
        noise = rng.integers(-24, 24, base.shape, dtype=np.int16)
        path = folder / f"pic{i:04d}.png"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
        total += path.stat().st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from iat.app import App
    from iat.settings import Settings
    from support import Client

    with tempfile.TemporaryDirectory(prefix="iat-bench-export-") as tmp:
        tmp = Path(tmp)
        src = tmp / "pictures"
        src.mkdir()
        size = pictures(src, args.pictures)
        app = App(Settings.from_env({}, home=tmp / "home"))
        try:
            client = Client(app)
            client.call("projects.create", slug="bench", name="Bench", settings_json={"import_roots": [str(src)]})
            client.call("assets.import", slug="bench", paths=[str(src)])
            client.call("characters.create", slug="bench", code="mira", name="Mira", identity_constraints_json={})
            client.call("runs.start", slug="bench", provider="preview", candidates=4, shots=[
                {"job_key": f"s{i}", "scene": "a street", "characters": ["mira"], "time_of_day": "day",
                 "weather": "clear", "cutout": i % 2 == 0} for i in range(4)])
            assert app.runner.wait_idle(600)
            root = app.projects.open("bench").root
            exports = root / "exports"
            folder_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            print(f"project: {args.pictures} pictures ({size / 1e6:.1f} MB) and a 16-candidate run; folder "
                  f"{folder_bytes / 1e6:.1f} MB")

            def ours():
                return client.call("exports.create", slug="bench", format="tar.gz")

            def theirs():
                subprocess.run(["tar", "czf", str(tmp / "ref.tar.gz"), "-C", str(root), "--exclude=./exports", "."],
                               check=True)

            ours(), theirs()  # warm-up: page cache, imports
            shutil.rmtree(exports)
            ours_t, theirs_t = [], []
            last = None
            for _ in range(args.rounds):
                t, last = timed(ours)
                ours_t.append(t)
                theirs_t.append(timed(theirs)[0])
            ratio = statistics.median(ours_t) / statistics.median(theirs_t)
            package = Path(last["path"])
            print(f"1. exports.create tar.gz {statistics.median(ours_t):.3f} s ({package.stat().st_size / 1e6:.1f} "
                  f"MB), tar czf {statistics.median(theirs_t):.3f} s ({(tmp / 'ref.tar.gz').stat().st_size / 1e6:.1f}"
                  f" MB) (median of {args.rounds}): ratio {ratio:.2f}x (target <= {TARGET}x) "
                  f"{'PASS' if ratio <= TARGET else 'FAIL'}")
            for fmt in ("zip", "folder"):
                t, out = timed(lambda: client.call("exports.create", slug="bench", format=fmt))
                print(f"2. exports.create {fmt}: {t:.3f} s ({out['size_bytes'] / 1e6:.1f} MB)")
            other = App(Settings.from_env({}, home=tmp / "other"))
            try:
                t, got = timed(lambda: Client(other).call("exports.import", path=str(package)))
                print(f"   exports.import of the tar.gz into a fresh home: {t:.3f} s ({got['files']} files)")
            finally:
                other.close()
        finally:
            app.close()
    return 1 if args.strict and ratio > TARGET else 0


if __name__ == "__main__":
    ensure_venv(__file__)
    sys.exit(main())
