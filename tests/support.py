"""Helpers the tests import (conftest.py files are not importable by name: there are several)."""

from __future__ import annotations

import os

import pytest

from iat.app import App
from iat.errors import IATError
from iat.context import Session
from iat.rpc.protocol import Dispatcher


def missing_real_part(what: str) -> None:
    """Fails in CI, skips elsewhere."""
    if os.environ.get("IAT_REQUIRE_REAL_PARTS") == "1":
        pytest.fail(f"required real part missing: {what}")
    pytest.skip(f"real part missing: {what}")


class Client:
    """Calls commands in process through the same JSON-RPC dispatcher the transports use."""

    def __init__(self, app: App):
        self.app = app
        self.dispatcher = Dispatcher(app)
        self.session = Session("inproc", authenticated=True)

    def call(self, method: str, **params):
        return self.dispatcher.call(method, params, self.session)

    def error(self, method: str, **params) -> IATError:
        with pytest.raises(IATError) as info:
            self.call(method, **params)
        return info.value


def wait_for(check, what: str = "the condition", timeout: float = 240.0, poll: float = 0.02):
    """Polls `check` until it returns something truthy (returned), failing after `timeout` seconds. Long limits
    suit a loaded 2-core machine: the condition is waited for, never slept on."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def finished_run(app: App, client: Client, provider: str, slug: str = "alpha", **params) -> tuple[dict, list, list, dict]:
    """Starts a run with `provider`, waits for the runner, and returns the run, its candidates, its provider call
    attempts and the project's costs grouped by run."""
    run = client.call("runs.start", slug=slug, provider=provider, **params)
    assert app.runner.wait_idle(120), "the run did not finish"
    run = client.call("runs.get", slug=slug, run_id=run["id"])
    candidates = client.call("candidates.list", slug=slug, run_id=run["id"])["items"]
    calls = client.call("providers.calls", slug=slug, run_id=run["id"])["items"]
    costs = client.call("costs.summary", slug=slug, group_by="run")
    return run, candidates, calls, costs


def assert_partial_after_three(run: dict, candidates: list, calls: list, costs: dict) -> None:
    """A two-shot, one-candidate, two-stage run whose provider fails after three pictures (max_attempts 2): the run
    ends partial, the failing call's two attempts recorded, the three successes costed once each."""
    assert run["status"] == "partial"
    ok = [c for c in calls if c["outcome"] == "ok"]
    failed = [c for c in calls if c["outcome"] == "error"]
    assert len(ok) == 3 and len(failed) == 2  # the failing call: both of its attempts
    assert {(c["http_status"], c["error_code"]) for c in failed} == {(500, "provider_unavailable")}
    assert sorted(c["attempt"] for c in failed) == [1, 2] and len({c["call_id"] for c in failed}) == 1
    assert sorted(c["status"] for c in candidates) == ["done", "failed"]
    assert costs["events"] == 3


def all_assets(client: Client, slug: str = "alpha") -> dict[str, dict]:
    """Every asset of the project by id, through assets.list's pages."""
    out, cursor = {}, None
    while True:
        page = client.call("assets.list", slug=slug, limit=500, **({"cursor": cursor} if cursor else {}))
        out.update({a["id"]: a for a in page["items"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def studio_schemas(url: str) -> set[str]:
    """The project schemas (iat_p_<id>) a studio's PostgreSQL database holds."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'iat_p_%'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
