"""Studio queue benchmark: a 200-candidate run (50 shots x 4, the preview provider) on a studio project in
PostgreSQL, drained by two real sidecars (each with its own home, the second attaching the project) against one.

    .venv/bin/python scripts/bench/studio_drain.py [--rounds N] [--shots S] [--candidates K] [--json FILE]

Uses the PostgreSQL server named by IAT_TEST_PG_DSN, or starts a throwaway one the way scripts/lib/pg.sh does
(then re-runs itself under it). Each round makes a fresh database; the one- and two-sidecar sides alternate. The
time is from runs.start to the run's status `done` (sidecar start-up and attaching are not timed). Reported: the
median per side and the speed-up (one / two); no target (the issue asks for the figure: on 2 cores, modest).
Each run is checked: every candidate recorded once.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[2]
SIDECAR = Path(sys.executable).with_name("iat-sidecar")


class Sidecar:
    """One `iat-sidecar serve --stdio` process and a minimal JSON-RPC client on its pipes."""

    def __init__(self, home: Path, env: dict[str, str]):
        full = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
        full.update({"IAT_HOME": str(home), **env})
        self.proc = subprocess.Popen([str(SIDECAR), "serve", "--stdio"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=full)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            msg = json.loads(line)
            if "id" in msg:
                self.replies.put(msg)

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0):
        msg_id = uuid.uuid4().hex
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method,
                                          "params": params or {}}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = self.replies.get(timeout=timeout)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _fresh_database(dsn: str) -> str:
    import psycopg2

    name = f"iat_bench_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return urlunparse(urlparse(dsn)._replace(path=f"/{name}"))


def one_round(dsn: str, sidecars: int, shots: int, k: int) -> float:
    url = _fresh_database(dsn)
    tmp = Path(tempfile.mkdtemp(prefix="iat-drain-"))
    env = {"IAT_STUDIO_DATABASE_URL": url, "IAT_STUDIO_POLL_SECONDS": "0.2"}
    procs = [Sidecar(tmp / f"ws-{i}", env) for i in range(sidecars)]
    try:
        slug = "drain"
        procs[0].call("projects.create", {"slug": slug, "name": "Drain", "backend": "postgres"})
        for other in procs[1:]:
            other.call("projects.attach", {"slug": slug})
        plan = [{"job_key": f"shot-{i:03d}", "scene": f"scene {i} by the harbour"} for i in range(shots)]
        start = time.perf_counter()
        run = procs[0].call("runs.start", {"slug": slug, "shots": plan, "candidates": k, "seed": 11})
        while True:
            got = procs[0].call("runs.get", {"slug": slug, "run_id": run["id"]})
            if got["status"] not in ("planned", "running"):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        assert got["status"] == "done", got
        cands = procs[0].call("candidates.list", {"slug": slug, "run_id": run["id"]})["items"]
        assert len({(c["job_id"], c["candidate_index"]) for c in cands}) == len(cands) == shots * k
        return elapsed
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--strict", action="store_true", help="accepted for symmetry: there is no target")
    args = parser.parse_args()
    dsn = os.environ.get("IAT_TEST_PG_DSN")
    if not dsn:  # start a throwaway server as scripts/test does, and run again under it
        script = (f"source scripts/lib/common.sh; source scripts/lib/pg.sh; trap pg_stop EXIT; pg_start; "
                  f"{sys.executable} {Path(__file__).resolve()} {' '.join(sys.argv[1:])}")
        return subprocess.call(["bash", "-c", script], cwd=ROOT)
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for n in (1, 2):
            t = one_round(dsn, n, args.shots, args.candidates)
            times[n].append(t)
            print(f"round {r + 1}: {n} sidecar(s): {t:.2f} s", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    total = args.shots * args.candidates
    print(f"\n{total}-candidate run ({args.shots} shots x {args.candidates}), preview provider, PostgreSQL project")
    print(f"  one sidecar:  {one:.2f} s ({total / one:.1f} candidates/s)")
    print(f"  two sidecars: {two:.2f} s ({total / two:.1f} candidates/s)")
    print(f"  speed-up: {one / two:.2f}x on {os.cpu_count()} CPU(s)")
    if args.json:
        args.json.write_text(json.dumps({"one_s": times[1], "two_s": times[2], "speedup": one / two,
                                         "candidates": total, "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
