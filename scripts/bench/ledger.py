#!/usr/bin/env python3
"""Ledger overhead per provider call, against the same HTTP call made directly with the same client.

    .venv/bin/python scripts/bench/ledger.py [--calls N] [--rounds R] [--strict]

A loopback vendor server in its own process (aiohttp, 127.0.0.1, answering a generation-shaped JSON body with a
usage block) takes N sequential POSTs per slice from one keep-alive httpx2 client (the client the connectors
use): directly, and through `app.ledger.call` on a real project (attempt row and cost event written per call,
in one transaction, through the project's writer; no budget set). The slices alternate, R rounds; the ratio is
of the median per-call times. Target: ratio <= 1.1x. A report: exit code 0 whatever the results, unless --strict.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchenv import VENV_PY, ensure_venv  # noqa: E402 - beside this script

SERVER = r"""
import json, sys
from aiohttp import web
body = json.dumps({"created": 1, "data": [{"b64_json": "iVBORw0KGgo=" * 64}],
                   "usage": {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210}}).encode()
async def generate(request):
    await request.read()
    return web.Response(body=body, content_type="application/json")
app = web.Application(); app.router.add_post("/v1/images/generations", generate)
async def started(app):
    print(site._server.sockets[0].getsockname()[1], flush=True)
runner = web.AppRunner(app, access_log=None)
import asyncio
loop = asyncio.new_event_loop(); loop.run_until_complete(runner.setup())
site = web.TCPSite(runner, "127.0.0.1", 0); loop.run_until_complete(site.start())
print(site._server.sockets[0].getsockname()[1], flush=True)
loop.run_forever()
"""


def main() -> int:
    ensure_venv(__file__)
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200, help="calls per slice")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()

    import httpx2

    from iat.app import App
    from iat.providers.base import Account, ProviderConfig
    from iat.settings import Settings
    from tests.support import Client

    server = subprocess.Popen([str(VENV_PY), "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1/images/generations"
        payload = {"model": "gpt-image-1", "prompt": "a quiet street", "size": "1024x1024"}
        http = httpx2.Client(timeout=30)
        with tempfile.TemporaryDirectory() as home:
            app = App(Settings(home=Path(home)))
            Client(app).call("projects.create", slug="bench", name="Bench")
            handle = app.projects.open("bench")
            account = Account("openai", ProviderConfig(endpoint=f"http://127.0.0.1:{port}", concurrency=4))

            class Answer:
                def __init__(self, response):
                    body = response.json()
                    self.http_status = response.status_code
                    self.usage = {"units": body["usage"]["total_tokens"], "cost_usd": 0.0421, "source": "vendor"}

            def direct() -> Answer:
                return Answer(http.post(url, json=payload))

            def through_ledger() -> Answer:
                return app.ledger.call(handle, account, "generate", lambda attempt: direct())

            def per_call(fn) -> float:
                started = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                return (time.perf_counter() - started) / args.calls

            per_call(direct), per_call(through_ledger)  # warm-up: connections, the project's writer
            bare, ledger = [], []
            for _ in range(args.rounds):
                bare.append(per_call(direct))
                ledger.append(per_call(through_ledger))
            app.close()
    finally:
        server.terminate()
        server.wait(10)
    ratio = statistics.median(ledger) / statistics.median(bare)
    ok = ratio <= 1.1
    print(f"ledger overhead: {statistics.median(ledger) * 1e3:.3f} ms per call through the ledger vs "
          f"{statistics.median(bare) * 1e3:.3f} ms direct = {ratio:.3f}x (target <= 1.1x) {'ok' if ok else 'MISS'}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
