#!/usr/bin/env python3
"""Benchmark of the frozen sidecar (dist/iat-sidecar), as ratios and figures measured in one run:

- cold start: spawn -> first stdout line (`sidecar.ready`) -> `system.ping` -> its response, median over N runs,
  against a hello-world program frozen by the same PyInstaller in this run (spawn -> write one line -> read the
  line it writes back). Target: <= 1.5x.
- size of dist/iat-sidecar/ on disk. Target: <= 300 MB (issue 9). The size per package is in the build output and
  dist/iat-sidecar.sizes.json (scripts/build-sidecar).
- size of the .deb (dist/bundles/deb/, scripts/build-app --bundles deb), when one was built from this very sidecar
  (newer than it). Target: <= 120 MiB.
- idle resident memory after ready (VmRSS of the sidecar and its children, from /proc). Target: <= 120 MB.

    .venv/bin/python scripts/bench/frozen_start.py [-n 15] [--no-build] [--reuse-hello] [--check]

The sidecar is (re)built first through scripts/build-sidecar (a no-op when up to date). "Cold" means a new process
each time; the OS file cache is warm after the first run (the first run of each program is discarded). MB = 10^6
bytes. --check exits 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXE_SUFFIX = ".exe" if os.name == "nt" else ""
SIDECAR = ROOT / "dist" / "iat-sidecar" / f"iat-sidecar{EXE_SUFFIX}"
HELLO_DIR = ROOT / ".build" / "bench-hello"
HELLO = HELLO_DIR / "dist" / "bench-hello" / f"bench-hello{EXE_SUFFIX}"

TARGET_RATIO = 1.5
TARGET_SIZE_MB = 300.0
TARGET_DEB_MIB = 120.0
DEBS = ROOT / "dist" / "bundles" / "deb"
TARGET_RSS_MB = 120.0

HELLO_SOURCE = '''import sys

line = sys.stdin.readline()
sys.stdout.write("hello " + line)
sys.stdout.flush()
'''
PING = b'{"jsonrpc":"2.0","id":1,"method":"system.ping"}\n'


def build_sidecar() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build-sidecar"), "--no-stage"], cwd=ROOT, check=True)


def build_hello() -> float:
    """Freezes the hello-world program with the same PyInstaller (onedir, console); returns the build seconds."""
    if HELLO_DIR.exists():
        shutil.rmtree(HELLO_DIR)
    HELLO_DIR.mkdir(parents=True)
    source = HELLO_DIR / "bench-hello.py"
    source.write_text(HELLO_SOURCE)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--onedir", "--console", "--log-level", "WARN",
                    "--name", "bench-hello", "--distpath", str(HELLO_DIR / "dist"),
                    "--workpath", str(HELLO_DIR / "work"), "--specpath", str(HELLO_DIR), str(source)],
                   cwd=HELLO_DIR, check=True)
    if not HELLO.is_file():
        sys.exit(f"frozen_start: {HELLO} was not built")
    return time.monotonic() - started


def bare_env(home: Path) -> dict[str, str]:
    # PATH names a folder that does not exist: no Python (nor anything else) to be found there.
    env = {"PATH": str(home / "no-bin"), "HOME": str(home),
           "IAT_HOME": str(home / "iat-home"), "LANG": "C.UTF-8"}
    if os.name == "nt":
        env.update({k: os.environ[k] for k in ("SYSTEMROOT", "WINDIR", "TEMP", "TMP", "LOCALAPPDATA") if k in os.environ})
    return env


def time_hello(env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([str(HELLO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    proc.stdin.write(b"ping\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()
    if line != b"hello ping\n":
        sys.exit(f"frozen_start: hello-world answered {line!r}")
    return elapsed


def start_sidecar(env: dict[str, str], command: list[str] | None = None) -> tuple[subprocess.Popen, float]:
    """Spawns `serve --stdio`, reads `sidecar.ready`, pings; returns the process and the seconds it all took."""
    started = time.perf_counter()
    proc = subprocess.Popen([*(command or [str(SIDECAR)]), "serve", "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    ready = json.loads(proc.stdout.readline() or b"null")
    proc.stdin.write(PING)
    proc.stdin.flush()
    while True:
        response = json.loads(proc.stdout.readline() or b"null")
        if response is None or response.get("id") == 1:
            break
    elapsed = time.perf_counter() - started
    if not (ready and ready.get("method") == "sidecar.ready"):
        stop(proc)
        sys.exit(f"frozen_start: the first line was not sidecar.ready: {ready!r}")
    if not (response and response.get("result", {}).get("pong") is True):
        stop(proc)
        sys.exit(f"frozen_start: system.ping answered {response!r}")
    return proc, elapsed


def stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    proc.stdout.close()


def rss_bytes(pid: int) -> int | None:
    """VmRSS of `pid` and all its descendants (Linux /proc; psutil elsewhere when installed)."""
    if sys.platform.startswith("linux"):
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    raw = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                children.setdefault(int(raw[raw.rindex(")") + 2:].split()[1]), []).append(int(entry))
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            todo.extend(children.get(p, []))
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total
    try:
        import psutil
    except ImportError:
        return None
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description="Start time, size and idle memory of the frozen sidecar.")
    parser.add_argument("-n", "--runs", type=int, default=15, help="timed starts of each program (default 15)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds idle before reading the RSS (default 2)")
    parser.add_argument("--no-build", action="store_true", help="use dist/iat-sidecar as it is")
    parser.add_argument("--reuse-hello", action="store_true", help="keep an existing .build/bench-hello build")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    args = parser.parse_args()

    if not args.no_build:
        build_sidecar()
    if not SIDECAR.is_file():
        sys.exit(f"frozen_start: {SIDECAR} is missing; run scripts/build-sidecar")
    if args.reuse_hello and HELLO.is_file():
        print("hello-world: reusing .build/bench-hello")
    else:
        print(f"hello-world: frozen in {build_hello():.1f} s")

    with tempfile.TemporaryDirectory(prefix="iat-bench-") as tmp:
        env = bare_env(Path(tmp))
        # One discarded start of each (warms the file cache, creates the data folder), then alternate.
        time_hello(env)
        stop(start_sidecar(env)[0])
        # For reference, the same core unfrozen (the venv's interpreter, `python -m iat`): what the freeze adds.
        venv_cmd = [sys.executable, "-m", "iat"]
        stop(start_sidecar(env, venv_cmd)[0])
        hello_s, sidecar_s, venv_s = [], [], []
        for _ in range(args.runs):
            hello_s.append(time_hello(env))
            proc, elapsed = start_sidecar(env)
            sidecar_s.append(elapsed)
            stop(proc)
            proc, elapsed = start_sidecar(env, venv_cmd)
            venv_s.append(elapsed)
            stop(proc)

        proc, _ = start_sidecar(env)
        try:
            time.sleep(args.idle)
            rss = rss_bytes(proc.pid)
        finally:
            stop(proc)

    hello_med, sidecar_med = statistics.median(hello_s), statistics.median(sidecar_s)
    ratio = sidecar_med / hello_med
    size_mb = tree_size(SIDECAR.parent) / 1e6
    rss_mb = None if rss is None else rss / 1e6
    deb = max(DEBS.glob("*.deb"), key=lambda p: p.stat().st_mtime, default=None) if DEBS.is_dir() else None
    if deb is not None and deb.stat().st_mtime < SIDECAR.stat().st_mtime:
        deb = None  # built from an older sidecar: not this one's figure
    deb_mib = None if deb is None else deb.stat().st_size / 2**20

    rows = [
        ("cold start: sidecar ready+ping / hello-world (median)", f"{ratio:.2f}x", f"<= {TARGET_RATIO}x",
         ratio <= TARGET_RATIO),
        ("  sidecar spawn -> ready -> ping answered (median)", f"{sidecar_med * 1000:.0f} ms", "", None),
        ("  hello-world spawn -> line answered (median)", f"{hello_med * 1000:.0f} ms", "", None),
        ("  (reference) unfrozen venv: python -m iat, same steps", f"{statistics.median(venv_s) * 1000:.0f} ms", "",
         None),
        ("size of dist/iat-sidecar/", f"{size_mb:.1f} MB", f"<= {TARGET_SIZE_MB:.0f} MB", size_mb <= TARGET_SIZE_MB),
        ("size of the .deb (none newer than the sidecar: n/a)" if deb is None else f"size of {deb.name}",
         "n/a" if deb_mib is None else f"{deb_mib:.1f} MiB", f"<= {TARGET_DEB_MIB:.0f} MiB",
         None if deb_mib is None else deb_mib <= TARGET_DEB_MIB),
        (f"idle RSS {args.idle:g} s after ready (with children)", "n/a" if rss_mb is None else f"{rss_mb:.1f} MB",
         f"<= {TARGET_RSS_MB:.0f} MB", None if rss_mb is None else rss_mb <= TARGET_RSS_MB),
    ]
    print(f"\nfrozen sidecar benchmark ({args.runs} runs each, {sys.platform}, PyInstaller "
          f"{_pyinstaller_version()}, Python {sys.version.split()[0]})")
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'measured':>10}  {'target':>10}  result")
    print("-" * (width + 32))
    for name, measured, target, ok in rows:
        verdict = "" if ok is None and not target else ("n/a" if ok is None else ("pass" if ok else "FAIL"))
        print(f"{name:<{width}}  {measured:>10}  {target:>10}  {verdict}")
    failed = [r[0] for r in rows if r[3] is False]
    return 1 if args.check and failed else 0


def _pyinstaller_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyinstaller")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
