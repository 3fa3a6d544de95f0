#!/usr/bin/env python3
"""storage.sync against `aws s3 sync`: 2,000 files pushed to a loopback S3 server (moto_server).

    .venv/bin/python scripts/bench/s3_sync.py [--files N] [--rounds R] [--strict]

The data: N files (default 2,000) of 1-64 KiB of random bytes under a project's results/ folder. Each round gives
both sides a fresh key prefix in one bucket of a moto_server started for the run (127.0.0.1, a free port), and
alternates which side goes first:

1. First push: storage.sync (push, in process through the JSON-RPC dispatcher, as a client of the running sidecar
   calls it: hashing, the listing, 2,000 uploads with their sha256, state rows and the audit row) against
   `aws s3 sync results/ s3://bucket/prefix/results/` (the AWS CLI v1, whose transfers are the same s3transfer,
   10 threads). Target: ratio of medians <= 1.2x.
2. Second push with nothing changed: storage.sync again against `aws s3 sync` again. Target: <= 0.5x.

The AWS CLI pins its own botocore, so it lives in a venv of its own, made on first use at .build/awscli-venv
(pip install awscli). Its time includes its process start; that start alone (`aws --version`) is reported too.
A report: exit code 0 whatever the results, unless --strict (1 when a target is missed).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from benchenv import ROOT, ensure_venv, timed  # noqa: E402 - beside this script

FIRST_TARGET, SECOND_TARGET = 1.2, 0.5
AWS_VENV = ROOT / ".build" / "awscli-venv"
KEYS = {"AWS_ACCESS_KEY_ID": "iat-bench", "AWS_SECRET_ACCESS_KEY": "iat-bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1"}


def aws_cli() -> Path:
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        print(f"making the AWS CLI's venv at {AWS_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(AWS_VENV)], check=True)
        subprocess.run([str(AWS_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "awscli"], check=True)
    return aws


def start_moto() -> tuple[subprocess.Popen, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("moto_server did not start")
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ.update(KEYS)
    import boto3

    from iat.app import App
    from iat.settings import Settings
    from support import Client

    aws = aws_cli()
    proc, endpoint = start_moto()
    tmp = Path(tempfile.mkdtemp(prefix="iat-bench-s3-"))
    app = App(Settings.from_env({}, home=tmp / "home"))
    try:
        client = Client(app)
        client.call("projects.create", slug="bench", name="Bench")
        root = app.projects.open("bench").root
        rnd = __import__("random").Random(7)
        total = 0
        for i in range(args.files):
            f = root / "results" / f"shot-{i // 100:03d}" / f"frame-{i:05d}.bin"
            f.parent.mkdir(parents=True, exist_ok=True)
            data = os.urandom(rnd.randint(1024, 64 * 1024))
            f.write_bytes(data)
            total += len(data)
        bucket = "iat-bench"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        env = {**os.environ, **KEYS}

        def ours_fn():
            out = client.call("storage.sync", slug="bench")
            assert out["failed"] == 0, out
            return out

        def theirs_fn(prefix: str):
            return lambda: subprocess.run([str(aws), "s3", "sync", str(root / "results"),
                                           f"s3://{bucket}/{prefix}/results", "--endpoint-url", endpoint,
                                           "--only-show-errors"], env=env, check=True)

        first: dict[str, list[float]] = {"ours": [], "aws": []}
        second: dict[str, list[float]] = {"ours": [], "aws": []}
        print(f"{args.files} files, {total / 1e6:.1f} MB, {args.rounds} rounds, moto_server at {endpoint}")
        for r in range(args.rounds):
            ours_prefix, aws_prefix = f"ours-{uuid.uuid4().hex[:8]}", f"aws-{uuid.uuid4().hex[:8]}"
            client.call("storage.set", slug="bench", s3_enabled=True, s3_bucket=bucket, s3_prefix=ours_prefix,
                        s3_endpoint_url=endpoint, s3_region="us-east-1")
            sides = [("ours", ours_fn), ("aws", theirs_fn(aws_prefix))]
            if r % 2:
                sides.reverse()
            for name, fn in sides:
                t, out = timed(fn)
                first[name].append(t)
                if name == "ours":
                    assert out["uploaded"] == args.files, out
            for name, fn in sides:
                t, out = timed(fn)
                second[name].append(t)
                if name == "ours":
                    assert out["uploaded"] == 0 and out["skipped"] == args.files, out
            print(f"  round {r + 1}: first ours {first['ours'][-1]:.2f} s, aws {first['aws'][-1]:.2f} s; "
                  f"second ours {second['ours'][-1]:.3f} s, aws {second['aws'][-1]:.3f} s", flush=True)
        start_t = statistics.median(timed(lambda: subprocess.run([str(aws), "--version"], env=env,
                                                                 capture_output=True, check=True))[0]
                                    for _ in range(3))
        r1 = statistics.median(first["ours"]) / statistics.median(first["aws"])
        r2 = statistics.median(second["ours"]) / statistics.median(second["aws"])
        print(f"1. first push: ours {statistics.median(first['ours']):.2f} s, aws s3 sync "
              f"{statistics.median(first['aws']):.2f} s (median): ratio {r1:.2f}x (target <= {FIRST_TARGET}x) "
              f"{'PASS' if r1 <= FIRST_TARGET else 'FAIL'}")
        print(f"2. second push, nothing changed: ours {statistics.median(second['ours']):.3f} s, aws s3 sync "
              f"{statistics.median(second['aws']):.3f} s (median): ratio {r2:.2f}x (target <= {SECOND_TARGET}x) "
              f"{'PASS' if r2 <= SECOND_TARGET else 'FAIL'}")
        print(f"   the AWS CLI's bare start (aws --version): {start_t:.3f} s")
        return 1 if args.strict and (r1 > FIRST_TARGET or r2 > SECOND_TARGET) else 0
    finally:
        app.close()
        proc.terminate()
        proc.wait(10)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ensure_venv(__file__)
    sys.exit(main())
