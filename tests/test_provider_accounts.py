"""providers.*: configuration validated per provider, enable/disable, readiness and free probes; and runs with
the ledger: cost per candidate, budget confirmation, a run stopped by its budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from iat.app import App
from iat.errors import ProviderUnavailable
from iat.providers.base import Account
from iat.providers.preview import PreviewProvider
from tests.support import Client

WAIT_S = 120
SHOTS = [{"job_key": f"shot{i}", "scene": f"a quiet street number {i}"} for i in range(4)]


def test_every_provider_is_listed_with_defaults_and_readiness(client: Client, project: dict):
    items = {p["provider_code"]: p for p in client.call("providers.list", slug="alpha")["items"]}
    preview = items["preview"]
    assert preview["ready"] and preview["reason"] is None and not preview["configured"] and preview["is_enabled"]
    assert preview["config"]["concurrency"] == 2 and preview["config"]["max_attempts"] == 3
    assert client.call("providers.get", slug="alpha", provider_code="preview") == preview
    assert client.error("providers.get", slug="alpha", provider_code="nope").name == "not_found"


@pytest.mark.parametrize("config, loc", [
    ({"colour": "blue"}, ["config", "colour"]),
    ({"endpoint": "ftp://example.org"}, ["config", "endpoint"]),
    ({"endpoint": "https://user:secret@example.org"}, ["config", "endpoint"]),
    ({"concurrency": 0}, ["config", "concurrency"]),
    ({"timeout_s": -1}, ["config", "timeout_s"]),
    ({"pricing": {"usd_per_image": -0.5}}, ["config", "pricing", "usd_per_image"]),
])
def test_a_bad_configuration_is_refused_and_changes_nothing(app: App, client: Client, project: dict, config, loc):
    client.call("providers.configure", slug="alpha", provider_code="preview", config={"concurrency": 3})
    before = client.call("providers.get", slug="alpha", provider_code="preview")
    audit = client.call("audit.list", slug="alpha")["items"] if "audit.list" in app.registry else None
    err = client.error("providers.configure", slug="alpha", provider_code="preview", config=config)
    assert err.name == "invalid_params" and err.details["errors"][0]["loc"] == loc
    assert "secret" not in err.message
    assert client.call("providers.get", slug="alpha", provider_code="preview") == before
    if audit is not None:
        assert client.call("audit.list", slug="alpha")["items"] == audit


def test_the_budget_setting_is_a_number(client: Client, project: dict):
    err = client.error("projects.update", slug="alpha", settings_json={"budget_usd": False})
    assert err.name == "invalid_params"
    assert client.call("projects.update", slug="alpha", settings_json={"budget_usd": 5})["settings_json"][
        "budget_usd"] == 5


def test_configure_enable_disable_and_runs_refuse_a_disabled_provider(client: Client, project: dict):
    out = client.call("providers.configure", slug="alpha", provider_code="preview",
                      config={"concurrency": 4, "pricing": {"usd_per_image": 0.02}})
    assert out["configured"] and out["config"]["concurrency"] == 4 and out["config"]["pricing"]["usd_per_image"] == 0.02
    assert out["config"]["max_attempts"] == 3  # unset keys keep their defaults
    out = client.call("providers.disable", slug="alpha", provider_code="preview")
    assert not out["is_enabled"] and not out["ready"] and "providers.enable" in out["reason"]
    err = client.error("runs.start", slug="alpha", shots=SHOTS[:1], candidates=1)
    assert err.name == "conflict" and "disabled" in err.message
    assert client.call("runs.list", slug="alpha")["items"] == []
    assert client.call("runs.plan", slug="alpha", shots=SHOTS[:1], candidates=1)["estimate"]["cost_usd"] == 0.02 * 3
    assert client.call("providers.enable", slug="alpha", provider_code="preview")["ready"]


class NeedsKey(PreviewProvider):
    """The preview renderer behind an API key, whose probe reaches a server that is not running."""

    code = "needs_key"
    required_secrets = ("api_key",)

    def probe(self, account: Account, *, timeout: float) -> dict:
        assert account.secrets["api_key"] == "sk-test-123"  # decrypted at the call
        raise ProviderUnavailable("needs_key is not reachable (is its server running?)")


def test_readiness_needs_the_secrets_and_check_probes_without_spending(app: App, client: Client, project: dict):
    app.providers.register("needs_key", f"{__name__}:NeedsKey")
    item = client.call("providers.get", slug="alpha", provider_code="needs_key")
    assert not item["ready"] and "api_key" in item["reason"] and "secrets.set" in item["reason"]
    checked = client.call("providers.check", slug="alpha", provider_code="needs_key")["items"][0]
    assert not checked["ready"] and checked["probe"] is None  # not ready: nothing was called
    client.call("secrets.set", slug="alpha", provider_code="needs_key", secret_name="api_key", value="sk-test-123")
    item = client.call("providers.get", slug="alpha", provider_code="needs_key")
    assert item["ready"] and item["secrets_present"] == ["api_key"]
    checked = client.call("providers.check", slug="alpha", provider_code="needs_key")["items"][0]
    assert not checked["ready"] and checked["probe"]["error"]["data"]["name"] == "provider_unavailable"
    everything = {c["provider_code"]: c for c in client.call("providers.check", slug="alpha")["items"]}
    assert everything["preview"]["ready"] and everything["preview"]["probe"] == {"ok": True,
                                                                                "info": {"model": "iat-preview-1"}}
    calls = client.call("providers.calls", slug="alpha")["items"]
    assert {c["operation_code"] for c in calls} == {"probe"}
    mine = sorted((c["provider_code"], c["outcome"]) for c in calls if c["provider_code"] in ("needs_key", "preview"))
    assert mine == [("needs_key", "error"), ("needs_key", "error"), ("preview", "ok")]
    assert client.call("costs.summary", slug="alpha")["events"] == 0  # probes cost nothing


def _run(app: App, client: Client, **params) -> dict:
    run = client.call("runs.start", slug="alpha", **params)
    assert app.runner.wait_idle(WAIT_S), "the run did not finish"
    return client.call("runs.get", slug="alpha", run_id=run["id"])


def test_a_run_records_provider_model_seed_and_cost_per_candidate(app: App, client: Client, project: dict):
    client.call("providers.configure", slug="alpha", provider_code="preview", config={"pricing": {"usd_per_image": 0.01}})
    run = _run(app, client, shots=SHOTS[:2], candidates=2, stages=["style_lock", "light_time"], seed=5)
    assert run["status"] == "done"
    assert run["settings_snapshot_json"]["provider_config"]["pricing"] == {"usd_per_image": 0.01}
    for cand in client.call("candidates.list", slug="alpha", run_id=run["id"])["items"]:
        meta = cand["meta_json"]
        assert meta["provider"] == "preview" and meta["model"] == "iat-preview-1"
        assert meta["cost_usd"] == pytest.approx(0.02) and isinstance(meta["seed"], int)
    calls = client.call("providers.calls", slug="alpha", run_id=run["id"], limit=100)["items"]
    assert len(calls) == 8 and {c["outcome"] for c in calls} == {"ok"}
    assert {c["meta_json"]["stage"] for c in calls} == {"style_lock", "light_time"}
    by_run = client.call("costs.summary", slug="alpha", group_by="run")
    assert by_run["groups"] == [{"key": run["id"], "events": 8, "cost_usd": pytest.approx(0.08), "units": 8.0}]


def test_a_run_over_the_budget_needs_confirmation(app: App, client: Client, project: dict):
    client.call("providers.configure", slug="alpha", provider_code="preview", config={"pricing": {"usd_per_image": 0.1}})
    client.call("projects.update", slug="alpha", settings_json={"budget_usd": 0.5})
    params = {"shots": SHOTS[:1], "candidates": 2, "stages": ["style_lock", "light_time"]}  # 4 calls: 0.40
    assert _run(app, client, **params)["status"] == "done"
    err = client.error("runs.start", slug="alpha", **params)  # 0.10 left
    assert err.name == "confirmation_required" and err.http_status == 428
    assert err.details["estimate_usd"] == pytest.approx(0.4) and err.details["left_usd"] == pytest.approx(0.1)
    assert len(client.call("runs.list", slug="alpha")["items"]) == 1  # nothing was created
    confirmed = _run(app, client, confirm_budget=True, **params)
    assert confirmed["status"] == "done" and confirmed["settings_snapshot_json"]["budget_confirmed"]
    assert client.call("costs.summary", slug="alpha")["budget"]["spent_usd"] == pytest.approx(0.8)


class CostsMoreThanEstimated(PreviewProvider):
    """Estimates 0.10 a call from its pricing; the vendor then bills 0.30 (estimates undershoot in real life)."""

    code = "costs_more"

    def generate(self, request, account=None, *, cancel=None, timeout=None):
        result = super().generate(request, account, cancel=cancel, timeout=timeout)
        return type(result)(result.image, result.seed, result.model, result.width, result.height,
                            {"units": 1.0, "cost_usd": 0.3, "currency": "USD", "source": "vendor"})


def test_a_run_stops_cleanly_when_the_budget_is_spent(app: App, client: Client, project: dict):
    # One runner thread: which calls fit the budget depends on their order, which two threads leave to the
    # scheduler (on a loaded machine a third job's first stage could go before the second job's last).
    from dataclasses import replace

    app.settings = replace(app.settings, runner_threads=1)
    app.providers.register("costs_more", f"{__name__}:CostsMoreThanEstimated")
    client.call("providers.configure", slug="alpha", provider_code="costs_more",
                config={"pricing": {"usd_per_image": 0.1}, "concurrency": 1})
    client.call("projects.update", slug="alpha", settings_json={"budget_usd": 1.0})
    finished = []
    app.events.subscribe(lambda name, payload: finished.append(payload) if name == "run.finished" else None)
    # 4 jobs x 2 stages: estimated 0.80 (within the budget), billed 0.30 a call. Calls 1-4 go (1.20 spent: the
    # 4th was estimated to fit), the 5th is refused: jobs 1-2 done, 3-4 stopped.
    run = _run(app, client, provider="costs_more", shots=SHOTS, candidates=1, stages=["style_lock", "light_time"])
    assert run["status"] == "partial" and run["jobs"] == {"done": 2, "failed": 2}
    jobs = client.call("jobs.list", slug="alpha", run_id=run["id"])["items"]
    assert [j["status"] for j in jobs] == ["done", "done", "failed", "failed"]
    assert [j["meta_json"].get("stopped") for j in jobs[2:]] == ["budget", "budget"]
    failed = [c for c in client.call("candidates.list", slug="alpha", run_id=run["id"])["items"]
              if c["status"] == "failed"]
    assert [c["meta_json"]["error"]["name"] for c in failed] == ["budget_exhausted"]
    calls = client.call("providers.calls", slug="alpha", run_id=run["id"], limit=100)["items"]
    assert len(calls) == 4 and {c["outcome"] for c in calls} == {"ok"}  # the refused call sent nothing
    summary = client.call("costs.summary", slug="alpha")
    assert summary["cost_usd"] == pytest.approx(1.2) and summary["budget"]["left_usd"] == 0.0
    app.events.drain()
    assert finished[-1]["stopped"] == "budget"
    log = Path(finished[-1]["run_log_path"]).read_text()
    assert '"budget_exhausted"' in log and '"stopped": "budget"' in log
