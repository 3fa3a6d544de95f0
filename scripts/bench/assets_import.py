#!/usr/bin/env python3
"""assets.import of 2,000 PNG files against `sha256sum` over the same files, measured in the same run.

    .venv/bin/python scripts/bench/assets_import.py [--files N] [--rounds R] [--strict] [--keep DIR]

The files: PNGs of 20-100 KB (noise, so they do not compress below that; generated with Pillow into a temporary
folder, or into --keep DIR and reused from there). Both sides run on a warm page cache.

- import: `assets.import {slug, paths: [folder]}` called in process through the JSON-RPC dispatcher into a fresh
  project each round (so nothing is deduplicated), from the call to its answer: paths resolved and checked, each
  file read once (hashed, header sniffed, copied into the store), the copies' data flushed to disk, renamed onto
  their content addresses, folder entries flushed, 2,000 rows and an audit row written in one transaction, and
  the result (2,000 asset rows) validated.
- reference: one `sha256sum` process over all the files (file names through `xargs -0`).
- also reported (no target), the copy floor: a bare Python loop that reads, hashes and writes each file as a new
  file renamed to its hash (no checks, no sniffing, no flush to disk, no database): how much of the import's time
  is the copy itself, which sha256sum does not make.

Rounds alternate between the two; the ratio compares the medians. Target: ratio <= 1.5x. The script also checks
that every imported sha256 equals sha256sum's, and prints where the import's time went. It is a report: exit code
0 whatever the ratio, unless --strict (1 on a miss).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchenv import ensure_venv  # noqa: E402 - beside this script
TARGET = 1.5


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def make_pngs(folder: Path, count: int) -> list[Path]:
    """`count` PNG files of 20-100 KB; reuses those already in `folder`."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    paths = []
    for i in range(count):
        path = folder / f"frame_{i:05d}.png"
        target = int(rng.integers(20_000, 100_000))
        side = max(16, int((target / 3) ** 0.5))  # RGB noise: ~3 bytes a pixel after compression
        if not path.exists():
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, "PNG", compress_level=1)
        paths.append(path)
    return paths


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sha256sum(paths: list[Path]) -> tuple[float, float, dict[str, str]]:
    """(wall seconds, CPU seconds of xargs + sha256sum, {path: digest})."""
    listing = b"\0".join(str(p).encode() for p in paths)
    cpu = children_cpu()
    started = time.perf_counter()
    out = subprocess.run(["xargs", "-0", "sha256sum"], input=listing, capture_output=True, check=True).stdout
    elapsed = time.perf_counter() - started
    cpu = children_cpu() - cpu
    sums = {}
    for line in out.decode().splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return elapsed, cpu, sums


def copy_floor(paths: list[Path], dest: Path) -> tuple[float, float]:
    """(wall, CPU seconds) of the least an import that keeps a copy does: read, hash, create, write, rename."""
    import hashlib

    dest.mkdir(parents=True)
    cpu = time.process_time()
    started = time.perf_counter()
    for i, path in enumerate(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, os.fstat(fd).st_size + 1)
        finally:
            os.close(fd)
        digest = hashlib.sha256(data).hexdigest()
        temp = dest / f"{i}.part"
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(out, data)
        os.close(out)
        os.replace(temp, dest / f"{digest}.png")
    return time.perf_counter() - started, time.process_time() - cpu


class Phases:
    """Wall-clock and CPU time (of the whole process: the steps run one after another) spent in the importer's
    steps, by wrapping its module functions; nothing else changes."""

    def __init__(self) -> None:
        from iat.assets import importer, repo, store

        self.totals: dict[str, list[float]] = {}
        self._undo = []
        for module, name, label in [(importer, "collect", "check paths"), (importer, "stage_all", "read+hash+copy"),
                                    (store, "flush", "flush data"), (store, "commit", "rename into place"),
                                    (repo, "import_assets", "insert rows"), (store, "flush_dirs", "flush folders")]:
            self._wrap(module, name, label)

    def _wrap(self, module, name: str, label: str) -> None:
        original = getattr(module, name)

        def timed(*args, **kwargs):
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                total = self.totals.setdefault(label, [0.0, 0.0])
                total[0] += time.perf_counter() - started
                total[1] += time.process_time() - cpu

        setattr(module, name, timed)
        self._undo.append((module, name, original))

    def close(self) -> None:
        for module, name, original in self._undo:
            setattr(module, name, original)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (default 5, after one warm-up each)")
    parser.add_argument("--keep", metavar="DIR", help="generate the PNGs here and reuse them on later runs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)

    from iat.app import App
    from iat.rpc.protocol import Dispatcher, Session
    from iat.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="iat-bench-import-"))
    src = Path(args.keep) if args.keep else work / "src"
    try:
        progress(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        progress(f"generating {args.files} PNG files in {src}")
        paths = make_pngs(src, args.files)
        # Only the generated files: a kept folder may hold more.
        folder = src if len(list(src.glob("*.png"))) == args.files else None
        if folder is None:
            raise SystemExit(f"{src} holds other PNGs than the {args.files} generated ones; use an empty --keep DIR")
        total_bytes = sum(p.stat().st_size for p in paths)
        progress(f"{len(paths)} files, {total_bytes / 1e6:.1f} MB, {total_bytes / len(paths) / 1e3:.0f} KB average")

        app = App(Settings.from_env({}, home=work / "home"))
        dispatcher = Dispatcher(app)
        session = Session("bench", authenticated=True)
        phases = Phases()
        try:
            def import_once(n: int) -> tuple[float, float, dict]:
                slug = f"bench-{n}"
                dispatcher.call("projects.create", {"slug": slug, "name": slug,
                                                    "settings_json": {"import_roots": [str(src)]}}, session)
                started, cpu = time.perf_counter(), time.process_time()
                result = dispatcher.call("assets.import", {"slug": slug, "paths": [str(folder)]}, session)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                # Projects stay until the end: removing 2,000 files meanwhile (discards on some disks) would
                # slow whatever runs next.
                return elapsed, cpu, result

            _, _, sums = sha256sum(paths)  # warm-up of the page cache and of both sides
            _, _, result = import_once(0)
            assert result["created"] == len(paths), result["created"]
            wrong = [i["source_path"] for i in result["items"] if sums.get(i["source_path"]) != i["sha256"]]
            assert not wrong, f"sha256 differs from sha256sum's for {wrong[:3]}"
            phases.totals.clear()
            refs, imports, ref_cpu, import_cpu, floors, floor_cpu = [], [], [], [], [], []
            for n in range(1, args.rounds + 1):
                wall, cpu, _ = sha256sum(paths)
                refs.append(wall)
                ref_cpu.append(cpu)
                wall, cpu, _ = import_once(n)
                imports.append(wall)
                import_cpu.append(cpu)
                wall, cpu = copy_floor(paths, work / f"floor-{n}")
                floors.append(wall)
                floor_cpu.append(cpu)
                progress(f"round {n}: sha256sum {refs[-1] * 1000:.0f} ms, assets.import {imports[-1] * 1000:.0f} ms, "
                         f"copy floor {floors[-1] * 1000:.0f} ms")
        finally:
            phases.close()
            app.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref, imp = statistics.median(refs), statistics.median(imports)
    ratio = imp / ref
    ok = ratio <= TARGET
    print(f"files: {len(paths)} PNG, {total_bytes / 1e6:.1f} MB")
    print(f"sha256sum (one process, xargs): median {ref * 1000:.0f} ms  (min {min(refs) * 1000:.0f})")
    print(f"assets.import (in process):     median {imp * 1000:.0f} ms  (min {min(imports) * 1000:.0f}), "
          f"{len(paths) / imp:.0f} files/s")
    print(f"ratio: {ratio:.2f}x  (target <= {TARGET}x)  {'PASS' if ok else 'FAIL'}")
    cpu_ref, cpu_imp = statistics.median(ref_cpu), statistics.median(import_cpu)
    print(f"CPU time (user+sys, all threads): sha256sum {cpu_ref * 1000:.0f} ms, assets.import "
          f"{cpu_imp * 1000:.0f} ms = {cpu_imp / cpu_ref:.2f}x  (robust to other load on the machine)")
    floor, cpu_floor = statistics.median(floors), statistics.median(floor_cpu)
    print(f"copy floor (read, hash, write, rename; one thread, no flush): median {floor * 1000:.0f} ms = "
          f"{floor / ref:.2f}x sha256sum (CPU {cpu_floor * 1000:.0f} ms); the import is {imp / floor:.2f}x the floor")
    rounds = len(imports)
    wall_left, cpu_left = sum(imports), sum(import_cpu)
    print("import time by step (mean per import):     wall      cpu")
    for label, (wall, cpu) in phases.totals.items():
        wall_left, cpu_left = wall_left - wall, cpu_left - cpu
        print(f"  {label:<34} {wall / rounds * 1000:6.0f} ms {cpu / rounds * 1000:6.0f} ms")
    print(f"  {'other (params, result rows, lease)':<34} {wall_left / rounds * 1000:6.0f} ms "
          f"{cpu_left / rounds * 1000:6.0f} ms")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
          + ("  (busy machine: rerun before trusting a FAIL)" if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
             else ""))
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    ensure_venv(__file__)
    raise SystemExit(main())
